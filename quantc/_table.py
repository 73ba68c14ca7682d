"""What the printable reports share: rows of dicts behind a read-only list protocol, and the
plain-text table they print."""


class Rows:
    """Rows of dicts: iterate, index, ``len()``; ``to_list()`` gives copies."""

    def __init__(self, rows):
        self.rows = [dict(r) for r in rows]

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def to_list(self):
        """The rows as a list of JSON-able dicts."""
        return [dict(r) for r in self.rows]

    def __repr__(self):
        return str(self)


def table(head, body, right=()):
    """Lines of a text table: the header, a rule, the rows; each column as wide as its widest
    cell, the columns in ``right`` right-aligned, trailing blanks stripped."""
    body = [[str(c) for c in row] for row in body]
    widths = [max([len(h)] + [len(row[i]) for row in body]) for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(head), line(["-" * w for w in widths])] + [line(row) for row in body]
