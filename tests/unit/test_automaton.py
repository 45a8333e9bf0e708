"""Property tests of the slate automaton: every allowed path is a valid slate,
and a feasible request never dead-ends, whatever the sampler picks."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from slatewise.decoding.automaton import SlateAutomaton, SlateSpec, SlateViolation, is_feasible

EOS = 2


@st.composite
def specs(draw):
    n = draw(st.integers(1, 40))
    n_categories = draw(st.integers(1, 6))
    categories = draw(st.lists(st.integers(0, n_categories - 1), min_size=n, max_size=n))
    caps = draw(st.lists(st.integers(0, 4), min_size=0, max_size=n_categories))
    k = draw(st.integers(1, n))
    assume(is_feasible(k, categories, caps))
    tokens = draw(st.lists(st.integers(3, 50_000), min_size=n, max_size=n, unique=True))
    return SlateSpec(k=k, eos_token_id=EOS, handle_tokens=tokens, categories=categories,
                     category_caps=caps)


@settings(max_examples=400, deadline=None)
@given(spec=specs(), data=st.data())
def test_any_allowed_path_is_a_valid_slate_and_never_dead_ends(spec, data):
    automaton = SlateAutomaton(spec)
    emitted = []
    while True:
        allowed = automaton.allowed_tokens()
        assert allowed, "dead end: no token allowed before the slate finished"
        token = data.draw(st.sampled_from(allowed))
        emitted.append(token)
        automaton.advance(token)
        if token == EOS:
            break
    assert automaton.allowed_tokens() == []
    handles = emitted[:-1]
    assert len(handles) == spec.k
    assert len(set(handles)) == spec.k
    index = {t: i for i, t in enumerate(spec.handle_tokens)}
    per_category = Counter(spec.categories[index[t]] for t in handles)
    for category, count in per_category.items():
        assert count <= spec.cap(category)


@settings(max_examples=200, deadline=None)
@given(spec=specs(), data=st.data())
def test_tokens_outside_the_allowed_set_are_refused(spec, data):
    automaton = SlateAutomaton(spec)
    for _ in range(spec.k):
        allowed = set(automaton.allowed_tokens())
        bad = data.draw(st.integers(0, 60_000).filter(lambda t: t not in allowed))
        with pytest.raises(SlateViolation):
            automaton.advance(bad)
        automaton.advance(data.draw(st.sampled_from(sorted(allowed))))
    assert automaton.allowed_tokens() == [EOS]


@settings(max_examples=100, deadline=None)
@given(spec=specs())
def test_extra_args_round_trip(spec):
    assert SlateSpec.from_extra_args(spec.to_extra_args()) == SlateSpec(
        k=spec.k, eos_token_id=spec.eos_token_id, handle_tokens=tuple(spec.handle_tokens),
        categories=tuple(spec.categories), category_caps=tuple(spec.category_caps),
    )


def test_sync_catches_up_incrementally():
    spec = SlateSpec(k=2, eos_token_id=EOS, handle_tokens=[10, 11, 12], categories=[0, 0, 1])
    automaton = SlateAutomaton(spec)
    automaton.sync([10])
    automaton.sync([10, 12])
    assert automaton.chosen == [0, 2]
    automaton.sync([10, 12, EOS])
    assert automaton.finished


def test_diversity_penalty_uses_max_similarity_to_chosen():
    sim = [1.0, 0.9, 0.1,
           0.9, 1.0, 0.2,
           0.1, 0.2, 1.0]
    spec = SlateSpec(k=2, eos_token_id=EOS, handle_tokens=[10, 11, 12], categories=[0, 0, 1],
                     prior=[1.0, 0.5, 0.0], similarity=sim, diversity_penalty=4.0)
    automaton = SlateAutomaton(spec)
    assert automaton.bias(1) == pytest.approx(0.5)  # nothing chosen yet: prior only
    automaton.advance(10)
    assert automaton.bias(1) == pytest.approx(0.5 - 4.0 * 0.9)
    assert automaton.bias(2) == pytest.approx(0.0 - 4.0 * 0.1)


def test_infeasible_caps_are_detected_up_front():
    assert not is_feasible(3, [0, 0, 0, 1], [1, 1])
    assert is_feasible(2, [0, 0, 0, 1], [1, 1])
    assert is_feasible(3, [0, 0, 0], [])


def _greedy_through_logits(spec: SlateSpec, logits_per_step) -> list[int]:
    """Decode greedily through constrain_row as the engine's logits processor does."""
    import torch

    from slatewise.decoding.masking import constrain_row

    automaton = SlateAutomaton(spec)
    out: list[int] = []
    for step in range(spec.k + 1):
        row = constrain_row(automaton, torch.tensor(logits_per_step(step), dtype=torch.float32))
        token = int(torch.argmax(row))
        automaton.advance(token)
        out.append(token)
    assert out[-1] == EOS
    return out[:-1]


def test_dpp_choice_in_the_engine_is_select_dpp_over_the_first_step_logits():
    import numpy as np

    from slatewise.pointwise.select import Limits, dpp

    rng = np.random.default_rng(3)
    n, k, vocab = 30, 8, 64
    e = rng.normal(size=(n, 16)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    categories = rng.integers(0, 4, n)
    kernel = 0.7 * (e @ e.T) + 0.3 * (categories[:, None] == categories[None, :])
    tokens = list(range(10, 10 + n))
    first = rng.normal(size=vocab).astype(np.float32)
    later = [rng.normal(size=vocab).astype(np.float32) for _ in range(k + 1)]
    spec = SlateSpec(k=k, eos_token_id=EOS, handle_tokens=tokens, categories=categories.tolist(),
                     category_caps=[2, 0, 3, 0], similarity=np.round(kernel, 4).ravel().tolist(), dpp_beta=0.4)
    picked = _greedy_through_logits(spec, lambda step: first if step == 0 else later[step])
    # Later steps' logits do not matter: the quality is fixed at the first step.
    unit_rows = np.linalg.cholesky(kernel + 1e-5 * np.eye(n)).astype(np.float32)
    expected = dpp(unit_rows, first[tokens], k, diversity=0.6, limits=Limits(categories, [2, 0, 3, 0]))
    assert [t - 10 for t in picked] == expected
    assert Counter(categories[expected].tolist())[0] <= 2
    # Less quality weight, more spread: beta 0 picks for diversity alone.
    spread = _greedy_through_logits(SlateSpec(**{**spec.__dict__, "dpp_beta": 0.0, "category_caps": ()}),
                                    lambda step: first)
    top = np.argsort(-first[tokens])[:k]
    spread_idx = [t - 10 for t in spread]
    assert np.linalg.slogdet(kernel[np.ix_(spread_idx, spread_idx)])[1] > np.linalg.slogdet(kernel[np.ix_(top, top)])[1]
    back = SlateSpec.from_extra_args(spec.to_extra_args())
    assert back.dpp_beta == pytest.approx(0.4)
    # The kernel travels as float32 bytes and comes back the same; a spec built
    # from bytes (as the planner builds it) decodes exactly as one built from a list.
    assert isinstance(spec.to_extra_args()["slatewise"]["similarity"], bytes)
    np.testing.assert_array_equal(back.similarity_array(), np.asarray(spec.similarity, np.float32))
    as_bytes = SlateSpec(**{**spec.__dict__, "similarity": np.asarray(spec.similarity, np.float32).tobytes()})
    assert _greedy_through_logits(as_bytes, lambda step: first if step == 0 else later[step]) == picked
