"""The ``quantc`` command line (to be filled)."""


def main(argv=None):
    print("quantc: no commands yet")
    return 0
