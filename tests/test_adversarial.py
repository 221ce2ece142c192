"""The projected-gradient search (verify.adversary) and the suite ``adversarial``.

The suite's quick preset is used as it is: its compiled programs are shared by
the module fixtures and the end-to-end run, so the expensive part (XLA
compilation on CPU) is paid once.
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsity_theory as st
from verify import adversary, runner
from verify.suites import adversarial, adversarial_search
from verify.claims import ALPHA


# --- projections -------------------------------------------------------------------


def _tree(key, scale=3.0):
    k1, k2 = jax.random.split(key)
    return {"a": scale * jax.random.normal(k1, (4, 3)), "b": scale * jax.random.normal(k2, (5,))}


def test_box_projection_lies_in_the_box_is_idempotent_and_keeps_interior_points():
    tree = _tree(jax.random.PRNGKey(0))
    once = adversary.Box(1.5)(tree)
    for leaf in jax.tree.leaves(once):
        assert float(jnp.max(jnp.abs(leaf))) <= 1.5
    twice = adversary.Box(1.5)(once)
    assert all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(once), jax.tree.leaves(twice)))
    inside = jax.tree.map(lambda x: 0.1 * jnp.tanh(x), tree)
    same = adversary.project_box(inside, 1.5)
    assert all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(inside), jax.tree.leaves(same)))
    # The nearest point of a box is the entrywise clip.
    np.testing.assert_array_equal(np.asarray(once["a"]), np.clip(np.asarray(tree["a"]), -1.5, 1.5))


def _frobenius(tree):
    return float(jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(tree))))


def test_frobenius_projection_scales_the_whole_tree_onto_the_ball():
    tree = _tree(jax.random.PRNGKey(1))
    norm = _frobenius(tree)
    assert norm > 2.0
    once = adversary.FrobeniusBall(2.0)(tree)
    assert _frobenius(once) == pytest.approx(2.0, rel=1e-12)
    for a, b in zip(jax.tree.leaves(once), jax.tree.leaves(tree)):  # nearest point: radial scaling
        np.testing.assert_allclose(np.asarray(a), np.asarray(b) * 2.0 / norm, rtol=1e-12)
    twice = adversary.project_frobenius_ball(once, 2.0)
    for a, b in zip(jax.tree.leaves(once), jax.tree.leaves(twice)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)
    inside = jax.tree.map(lambda x: x / (2 * norm), tree)
    same = adversary.project_frobenius_ball(inside, 2.0)
    assert all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(inside), jax.tree.leaves(same)))


def test_spectral_projection_is_the_nearest_point_of_the_ball():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(6, 6)) * 2.0
    radius = 1.7
    proj = np.asarray(adversary.project_spectral_ball(jnp.asarray(m), radius))
    # Reference: clip the singular values with NumPy's SVD.
    u, s, vh = np.linalg.svd(m)
    reference = (u * np.minimum(s, radius)) @ vh
    np.testing.assert_allclose(proj, reference, atol=1e-12)
    assert np.linalg.norm(proj, 2) <= radius * (1 + 1e-12)
    # Nearest: no point of the ball (random ones, and the radial scaling) is closer.
    best = np.linalg.norm(m - proj)
    for _ in range(200):
        g = rng.normal(size=(6, 6))
        candidate = g * (radius * rng.uniform() / np.linalg.norm(g, 2))
        assert np.linalg.norm(m - candidate) >= best - 1e-12
    assert np.linalg.norm(m - m * radius / np.linalg.norm(m, 2)) >= best
    # Idempotent, interior points unchanged bit for bit, batched over a leading axis.
    np.testing.assert_allclose(np.asarray(adversary.project_spectral_ball(jnp.asarray(proj), radius)),
                               proj, atol=1e-12)
    inside = jnp.asarray(m / (2 * np.linalg.norm(m, 2)))
    assert bool(jnp.array_equal(adversary.project_spectral_ball(inside, radius), inside))
    batch = jnp.stack([jnp.asarray(m), inside])
    out = np.asarray(adversary.SpectralBall(radius)(batch))
    np.testing.assert_allclose(out[0], reference, atol=1e-12)
    np.testing.assert_array_equal(out[1], np.asarray(inside))


def test_random_starts_lie_on_the_sphere_of_their_ball():
    key = jax.random.PRNGKey(3)
    w = np.asarray(adversary.random_in_ball(key, (3, 5, 5), "spectral", 2.5))
    np.testing.assert_allclose([np.linalg.norm(x, 2) for x in w], 2.5, rtol=1e-12)
    w = np.asarray(adversary.random_in_ball(key, (5, 5), "frobenius", 2.5))
    assert np.linalg.norm(w) == pytest.approx(2.5, rel=1e-12)


def test_bad_balls_and_products_are_rejected():
    with pytest.raises(ValueError, match="weight ball"):
        adversary.weight_ball("nuclear", 1.0)
    with pytest.raises(ValueError, match="radius"):
        adversary.weight_ball("spectral", 0.0)
    with pytest.raises(ValueError, match="Product of 2"):
        adversary.Product((adversary.Box(1.0), adversary.Box(1.0)))((jnp.ones(2),))


# --- the ascent ---------------------------------------------------------------------


def _linear(w, a):
    return jnp.sum(w * a)


def test_ascend_reaches_the_maximum_of_a_linear_function_on_the_spectral_ball():
    """max <A, W> over ||W||_2 <= r is r ||A||_* (the nuclear norm), at W = r U V^T."""
    a = jax.random.normal(jax.random.PRNGKey(0), (5, 5))
    radius = 2.0
    optimum = radius * float(np.linalg.norm(np.asarray(a), "nuc"))
    start = adversary.random_in_ball(jax.random.PRNGKey(1), (3, 5, 5), "spectral", radius)
    ball = adversary.SpectralBall(radius)
    result = adversary.ascend(_linear, start, ball, 400, 0.2, args=(a,))
    assert result.trace.shape == (3, 401)
    np.testing.assert_allclose(np.asarray(result.best_value), optimum, rtol=2e-3)
    assert np.all(np.asarray(result.best_value) <= optimum * (1 + 1e-12))
    u, _, vh = np.linalg.svd(np.asarray(a))
    np.testing.assert_allclose(np.asarray(result.best_params[0]), radius * u @ vh, atol=0.05)
    # Best so far is non-decreasing, ends at the best value, and every iterate is feasible.
    best = np.asarray(result.best_so_far())
    assert np.all(np.diff(best, axis=1) >= 0)
    np.testing.assert_array_equal(best[:, -1], np.asarray(result.best_value))
    assert np.all(np.asarray(adversary.spectral_norm(result.final_params)) <= radius * (1 + 1e-12))
    np.testing.assert_allclose(np.asarray(result.trace[:, 0]),
                               [float(_linear(w, a)) for w in result.initial_params], rtol=1e-12)
    # optax's per-coordinate Adam stalls well short of it on this non-separable set
    # (its step tends to lr sign(A)): why the default is the per-leaf Adam.
    plain = adversary.ascend(_linear, start, ball, 400, 0.2, args=(a,), optimizer="adam")
    assert float(jnp.max(plain.best_value)) < 0.9 * optimum


def _concave(params, target):
    x, w = params
    return -jnp.sum((x - target[0]) ** 2) - jnp.sum((w - target[1]) ** 2)


def test_ascend_finds_the_projection_of_an_outside_target_on_a_product_set():
    """max -||x - b||^2 - ||W - B||^2 over a box times a spectral ball: the
    maximiser is (clip(b), P_spectral(B))."""
    key1, key2 = jax.random.split(jax.random.PRNGKey(5))
    b = 2.0 * jax.random.normal(key1, (6,))
    big = 3.0 * jax.random.normal(key2, (4, 4))
    project = adversary.Product((adversary.Box(1.0), adversary.SpectralBall(1.5)))
    start = (jnp.zeros((2, 6)), jnp.zeros((2, 4, 4)))
    result = adversary.ascend(_concave, start, project, 500, 0.05, args=((b, big),))
    x, w = (np.asarray(p[0]) for p in result.best_params)
    np.testing.assert_allclose(x, np.clip(np.asarray(b), -1, 1), atol=2e-3)
    np.testing.assert_allclose(w, np.asarray(adversary.project_spectral_ball(big, 1.5)), atol=2e-3)


def _noisy(w, key):
    # A fresh Gaussian per call: the value reveals the key the step used.
    return jnp.sum(w) + jax.random.normal(key)


def test_a_stochastic_objective_gets_a_fresh_key_per_step_and_restart():
    start = jnp.zeros((2, 3))
    first = adversary.ascend(_noisy, start, adversary.Box(1.0), 20, 0.1, key=jax.random.PRNGKey(7))
    again = adversary.ascend(_noisy, start, adversary.Box(1.0), 20, 0.1, key=jax.random.PRNGKey(7))
    np.testing.assert_array_equal(np.asarray(first.trace), np.asarray(again.trace))  # reproducible
    # At step 0 the iterate is 0, so the value is the noise itself: restart r
    # used fold_in(split(key, R)[r], 0), and the restarts differ.
    keys = jax.random.split(jax.random.PRNGKey(7), 2)
    expected = [float(jax.random.normal(jax.random.fold_in(k, 0))) for k in keys]
    np.testing.assert_allclose(np.asarray(first.trace[:, 0]), expected, atol=1e-12)
    assert expected[0] != expected[1]
    # Each step a fresh key: the noise changes along the trace at every step.
    steps = np.asarray(first.trace[0]) - np.asarray(jnp.sum(first.final_params[0])) * 0
    assert len(np.unique(np.round(steps, 12))) == steps.size


def test_ascend_rejects_bad_arguments():
    start = jnp.zeros((2, 3))
    box = adversary.Box(1.0)
    with pytest.raises(ValueError, match="steps"):
        adversary.ascend(_noisy, start, box, 0, 0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        adversary.ascend(_noisy, start, box, 5, 0.0)
    with pytest.raises(ValueError, match="optimizer"):
        adversary.ascend(_noisy, start, box, 5, 0.1, optimizer="sgd")
    with pytest.raises(ValueError, match="schedule"):
        adversary.ascend(_noisy, start, box, 5, 0.1, schedule="linear")
    with pytest.raises(ValueError, match="restart axis"):
        adversary.ascend(_noisy, {"a": jnp.zeros(2), "b": jnp.zeros(3)}, box, 5, 0.1)


# --- deterministic part ------------------------------------------------------------


@pytest.fixture(scope="module")
def det():
    cell = adversarial.cells("quick")[0]
    assert cell["part"] == "deterministic"
    return cell, adversarial.run_cell(cell)


def test_masked_path_equals_the_library_with_the_same_gradients():
    """The search differentiates masked_attention_errors with a stop-gradient
    top-k mask: equal to sparse_attention_errors, with the same (true)
    gradient, which matches finite differences. (sparse_attention_errors once
    zeroed the kept logits' gradient; tests/test_gradients.py guards the fix.)"""
    u = jax.random.normal(jax.random.PRNGKey(1), (8, 8))
    direction = jax.random.normal(jax.random.PRNGKey(2), (8, 8))
    k = 3

    def library(u):
        return jnp.sum(st.sparse_attention_errors(u, (k,)).log_l2)

    def masked(u):
        return jnp.sum(st.masked_attention_errors(u, st.top_k_mask(jax.lax.stop_gradient(u), k)).log_l2)

    assert float(library(u)) == pytest.approx(float(masked(u)), rel=1e-13)
    h = 1e-6
    numeric = float(library(u + h * direction) - library(u - h * direction)) / (2 * h)
    assert float(jnp.sum(jax.grad(masked)(u) * direction)) == pytest.approx(numeric, rel=1e-6)
    assert float(jnp.sum(jax.grad(library)(u) * direction)) == pytest.approx(numeric, rel=1e-6)


def test_the_search_never_breaks_a_real_deterministic_bound(det):
    cell, result = det
    for claim in adversarial.SEARCHED:
        r = result[claim]
        assert r["violations"] == 0 and r["worst_ratio"] <= 1 + adversarial.TOLERANCE, claim
        assert r["checked"] == cell["restarts"] * cell["n"] * len(cell["windows"])
        # The search is not idle: it ends at least as high as it started.
        assert r["worst_ratio"] >= r["initial"]["worst_ratio"] - 1e-12, claim
    # D4, D5-lower, D6-lower and D6-upper are attained (with equality) by some
    # input; the search gets there.
    for claim in ("D4", "D5-lower", "D6-lower", "D6-upper"):
        assert result[claim]["worst_ratio"] > 0.999, claim
    rows = {r.claim: r for r in adversarial.summarise([det])}
    assert all(rows[c].verdict == "HOLDS" for c in adversarial.SEARCHED)


def test_the_planted_output_bound_is_missed_by_random_inputs_and_caught_by_the_search(det):
    cell, result = det
    planted = result["output-wrong"]
    assert planted["initial"]["worst_ratio"] < 1 and planted["initial"]["violations"] == 0
    assert planted["worst_ratio"] > 1.1 and planted["violations"] > 0
    assert planted["worst_ratio"] == pytest.approx(
        result["output-upper"]["worst_ratio"] / adversarial.WRONG_FACTOR, rel=1e-12)
    # Many more random points than the search's starts still miss it.
    worst = -math.inf
    for seed in range(60):
        start = adversarial_search.deterministic_start(dict(cell, seed_base=500 + seed))
        ratios = adversarial_search.exact_log_ratios(start, cell)
        worst = max(worst, float(np.max(ratios["output-wrong"])))
    assert math.exp(worst) < 1.0
    rows = {r.claim: r for r in adversarial.summarise([det])}
    assert rows["output-wrong"].verdict == "CAUGHT"


def _numpy_ratios(x, w, v, scale, windows):
    """Independent dense NumPy recomputation of every deterministic ratio."""
    u = scale * x @ w @ x.T
    n = u.shape[0]
    s = np.exp(u - u.max(axis=1, keepdims=True))
    s /= s.sum(axis=1, keepdims=True)
    r = np.exp(u.max(axis=1) - u.min(axis=1))
    order = np.argsort(-u, axis=1, kind="stable")
    centred = v - v.mean(axis=0)
    radius = np.linalg.norm(centred, axis=1).max()
    spectral = np.linalg.norm(centred, 2)
    out = {name: [] for name in ("D4", "D5-lower", "D6-lower", "D6-upper", "output-upper")}
    for k in windows:
        kept = np.zeros_like(s, dtype=bool)
        np.put_along_axis(kept, order[:, :k], True, axis=1)
        tau = np.where(kept, 0.0, s).sum(axis=1)
        sparse = np.where(kept, s, 0.0) / (1 - tau)[:, None]
        l2 = np.linalg.norm(s - sparse, axis=1)
        output = np.linalg.norm((s - sparse) @ v, axis=1)
        l2_up = r * math.sqrt((n - k) / (n * k))
        tau_up = np.minimum(1 - k / n, (n - k) * r / (k + (n - k) * r))
        out["D4"].append(tau / (1 - k / n))
        out["D5-lower"].append((n - k) / (n - k + k * r) / tau)
        out["D6-lower"].append(tau * math.sqrt(n / (k * (n - k))) / l2)
        out["D6-upper"].append(l2 / l2_up)
        out["output-upper"].append(output / np.minimum(2 * tau_up * radius, l2_up * spectral))
    return {name: np.stack(v, axis=1) for name, v in out.items()}


def test_reported_worst_ratios_match_an_independent_numpy_recomputation(det):
    cell, result = det
    for claim in adversarial.DETERMINISTIC_CLAIMS:
        params = result[claim]["worst_params"]
        x, w, v = (np.asarray(params[name]) for name in ("X", "W", "V"))
        assert np.all(np.abs(x) <= cell["input_radius"]) and np.all(np.abs(v) <= cell["input_radius"])
        assert np.linalg.norm(w, 2) <= cell["weight_radius"] * (1 + 1e-12)
        base = "output-upper" if claim == "output-wrong" else claim
        ratios = _numpy_ratios(x, w, v, cell["score_scale"], cell["windows"])[base]
        if claim == "output-wrong":
            ratios = ratios / adversarial.WRONG_FACTOR
        assert ratios.max() == pytest.approx(result[claim]["worst_ratio"], rel=1e-8), claim


# --- probabilistic part ----------------------------------------------------------


def _prob_cell(model="rademacher", preset="quick"):
    return next(c for c in adversarial.cells(preset) if c.get("model") == model)


def test_the_affine_bounds_equal_the_library_at_every_sigma():
    from sparsity_theory import bounds, error_bounds

    for cell in (_prob_cell(), _prob_cell(preset="paper")):
        n, delta = cell["n"], cell["delta"]
        affine = adversarial_search.affine_bounds(cell)
        sigma = np.array([0.0, 0.05, 0.8, 3.3, 7.5, 20.0])
        library = {
            "L4.2-P1": np.asarray(bounds.score_deviation_bound(sigma, n, delta)),
            "T4.3": bounds.small_entry_log_bound(sigma, n, cell["num_small"], delta / 2, delta / 2,
                                                 "binomial"),
            "T5.1-max": np.asarray(bounds.largest_entry_log_bound(sigma, n, delta / 2, delta / 2)),
            "T6.1": np.asarray(error_bounds.row_error_bounds(sigma, n, cell["small_window"], delta,
                                                             "cross").log_l2_upper),
            "L4.2-P3-wrong": np.asarray(bounds.log_normaliser_lower_bound(sigma, n, delta, 0.0)),
        }
        assert set(affine) == set(library) == set(adversarial.PROBABILISTIC_TARGETS)
        for target, (intercept, slope) in affine.items():
            np.testing.assert_allclose(intercept + slope * sigma, library[target], rtol=1e-12,
                                       atol=1e-12, err_msg=target)
        assert affine["T4.3"][0] == pytest.approx(-math.log(n), rel=1e-15)


def test_a_bound_that_is_not_affine_in_sigma_is_refused(monkeypatch):
    real = adversarial_search.bound_functions
    monkeypatch.setattr(adversarial_search, "bound_functions",
                        lambda cell: {**real(cell), "T5.1-max": lambda s: np.asarray(s) ** 2})
    with pytest.raises(ValueError, match="not affine"):
        adversarial_search.affine_bounds(_prob_cell())


@pytest.fixture(scope="module")
def prob():
    cell = _prob_cell()
    return cell, adversarial.run_cell(cell)


def test_the_planted_normaliser_bound_is_caught_at_the_adversarial_w_only(prob):
    cell, result = prob
    planted = result["L4.2-P3-wrong"]
    assert planted["trials"] == cell["recheck_seeds"]
    assert planted["check"]["verdict"] == "VIOLATED" and planted["check"]["p_value"] < ALPHA
    assert planted["check"]["ci_low"] > cell["delta"]
    random_w = planted["random_w"]
    assert random_w["check"]["verdict"] == "HOLDS" and random_w["check"]["ci_high"] < cell["delta"]
    # How: every singular value pushed to the radius (sigma about doubles).
    weights = planted["weights"]
    assert weights["adversarial"]["stable_rank"] > 1.5 * weights["random"]["stable_rank"]
    assert weights["adversarial"]["sigma_median"] > 1.5 * weights["random"]["sigma_median"]
    w = np.asarray(planted["adversarial_w"])
    assert np.linalg.norm(w, 2) <= cell["weight_radius"] * (1 + 1e-12)
    rows = {r.claim: r for r in adversarial.summarise([prob])}
    assert rows["L4.2-P3-wrong"].verdict == "CAUGHT"


def test_the_real_probabilistic_bounds_hold_after_the_fresh_recheck(prob):
    cell, result = prob
    rows = {r.claim: r for r in adversarial.summarise([prob])}
    for claim in ("L4.2-P1", "T4.3", "T5.1-max", "T6.1"):
        assert rows[claim].verdict == "HOLDS", claim
        r = result[claim]
        assert r["trials"] == cell["recheck_seeds"] and r["check"]["ci_high"] < cell["delta"]
        assert r["random_w"]["check"]["verdict"] == "HOLDS"
    # The search moves the real bounds towards tightness (worst ratio), not past them.
    assert result["T4.3"]["looseness"]["worst"] > 5 * result["T4.3"]["random_w"]["looseness"]["worst"]


def test_the_recheck_seeds_were_never_used_by_the_search():
    cell = _prob_cell()
    recheck = np.asarray(adversarial_search.recheck_keys(cell)).view(np.uint64).ravel()
    base = jax.random.PRNGKey(cell["seed_base"])
    used = []
    for i in range(len(adversarial.PROBABILISTIC_TARGETS)):
        for restart_key in jax.random.split(jax.random.fold_in(jax.random.fold_in(base, 1), i),
                                            cell["restarts"]):
            steps = jax.vmap(lambda t: jax.random.split(jax.random.fold_in(restart_key, t),
                                                        cell["batch"]))(jnp.arange(cell["steps"] + 1))
            used.append(np.asarray(steps).reshape(-1, 2))
    used = np.concatenate(used).view(np.uint64).ravel()
    assert used.size == 5 * cell["restarts"] * (cell["steps"] + 1) * cell["batch"]
    assert np.intersect1d(used, recheck).size == 0


def test_recheck_agrees_with_a_direct_numpy_computation():
    cell = _prob_cell()
    w = np.asarray(adversary.random_in_ball(jax.random.PRNGKey(9), (8, 8), "spectral", 6.0))
    keys = adversarial_search.recheck_keys(cell)  # the fixture's seed count: compiled programs reused
    out = adversarial_search.recheck(w, cell, keys)
    # Independent: the same draws by hand, the bounds from their formulas.
    n, delta = cell["n"], cell["delta"]
    inputs = jax.vmap(lambda k: st.sample_inputs(k, n, 8, adversarial.MODELS["rademacher"],
                                                 "cross"))(keys[:20])
    x, y = np.asarray(inputs.x[:, 0]), np.asarray(inputs.y)
    vec = cell["score_scale"] * x @ w  # w_i = lambda W^T x_i, as a row vector
    u = np.einsum("snd,sd->sn", y, vec)
    sigma = np.linalg.norm(vec, axis=1)  # Rademacher(1): nu = 1, mean 0
    lse = np.log(np.exp(u).sum(axis=1))
    t = sigma * math.sqrt(2 * math.log(2 * n / delta))
    np.testing.assert_allclose(out["L4.2-P1"]["log_ratio"][:20], np.log(np.abs(u).max(axis=1) / t),
                               rtol=1e-10)
    eta = sigma * math.sqrt(2 * math.log(1 / delta) / n)
    np.testing.assert_allclose(out["L4.2-P3-wrong"]["log_ratio"][:20],
                               math.log(n) + sigma**2 / 4 - eta - lse, rtol=1e-10, atol=1e-12)
    t1 = sigma * math.sqrt(2 * math.log(n / (delta / 2)))
    eta2 = sigma * math.sqrt(2 * math.log(2 / delta) / n)
    np.testing.assert_allclose(out["T5.1-max"]["log_ratio"][:20],
                               u.max(axis=1) - lse - (t1 + eta2 - math.log(n)), rtol=1e-10, atol=1e-12)
    assert out["L4.2-P3-wrong"]["failed"].dtype == bool


# --- the suite end to end -------------------------------------------------------------


def test_cells_and_bad_configurations():
    cells = adversarial.cells("quick")
    assert [c["part"] for c in cells] == ["deterministic"] + ["probabilistic"] * len(adversarial.MODELS)
    assert len({adversarial.cell_id(c) for c in cells}) == len(cells)
    assert all(c["recheck_seeds"] == 77 for c in adversarial.cells("quick", 77)[1:])
    for preset in adversarial.PRESETS:  # JSON-able, fully recorded
        for c in adversarial.cells(preset):
            assert json.loads(json.dumps(c)) == c and "seed_base" in c
    with pytest.raises(ValueError, match="unknown preset"):
        adversarial.cells("huge")
    with pytest.raises(ValueError, match="seeds"):
        adversarial.cells("quick", 0)
    with pytest.raises(ValueError, match="part"):
        adversarial.run_cell({"part": "other"})
    with pytest.raises(ValueError, match="input model"):
        adversarial.run_cell(dict(cells[1], model="cauchy"))
    with pytest.raises(ValueError, match="windows"):
        adversarial.run_cell(dict(cells[0], windows=[1, 32]))
    with pytest.raises(ValueError, match="small_window"):
        adversarial.run_cell(dict(cells[1], small_window=32))


def test_runner_end_to_end(det, prob, tmp_path, monkeypatch):
    """The quick preset's cells, reduced to the deterministic one and Rademacher
    input (the other models only repeat the probabilistic searches)."""
    real_cells = adversarial.cells
    monkeypatch.setattr(adversarial, "cells", lambda preset, seeds=None: [
        c for c in real_cells(preset, seeds) if c.get("model") in (None, "rademacher")])
    out = str(tmp_path / "adv")
    results = runner.run(["adversarial"], "quick", None, out, progress=False)
    with open(os.path.join(out, "results.json")) as f:
        saved = json.load(f)
    assert saved["suites"] == ["adversarial"]
    verdicts = {v["claim"]: v for v in saved["verdicts"]}
    assert set(verdicts) == set(adversarial.CLAIMS)
    for claim, v in verdicts.items():
        if claim.endswith("-wrong"):
            assert v["verdict"] == "CAUGHT", claim
        else:
            assert v["verdict"] == "HOLDS", claim
    assert not any(v["verdict"] in runner.FAILING_VERDICTS for v in results["verdicts"])
    # The run reproduces the module fixtures (same cells, same PRNG keys).
    cell_results = {adversarial.cell_id(c["cell"]): c["result"] for c in saved["cells"]["adversarial"]}
    assert cell_results[adversarial.cell_id(det[0])]["output-wrong"]["worst_ratio"] == \
        det[1]["output-wrong"]["worst_ratio"]
    assert cell_results[adversarial.cell_id(prob[0])]["L4.2-P3-wrong"]["failures"] == \
        prob[1]["L4.2-P3-wrong"]["failures"]
    report = open(os.path.join(out, "report.md")).read()
    assert "## Suite `adversarial`: analysis" in report
    assert "### Deterministic bounds: worst ratio at random starts and after the search" in report
    assert "| rademacher | L4.2-P3-wrong (planted) |" in report
    assert "| adversarial | output-wrong | **CAUGHT**" in report
    (figure,) = saved["figures"]
    assert figure["suite"] == "adversarial" and f"]({figure['path']})" in report
    with open(os.path.join(out, figure["path"]), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert saved["analysis"]["adversarial"]["deterministic"][0]["claim"] == "D4"
