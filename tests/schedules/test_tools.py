"""values(), plot() and the stateful facade."""

import sys

import numpy as np
import pytest
import torch

import schedules as S


def test_values_counts_and_explicit_steps():
    s = S.cosine(1.0, 0.0, 100)
    v = S.values(s, 101)
    assert v.shape == (101,) and v.dtype == np.float64
    # v is the NumPy path (np.sin, SIMD), s(t) the host path (math.sin): the same formula
    # (identical IEEE steps up to the sine), sines a few ulps apart (<= 4 + 1), squared (x2)
    # and two rounded steps after it: < 16 eps relative, or of the peak near the zero
    tol = dict(rtol=16 * np.finfo(float).eps, atol=16 * np.finfo(float).eps)
    assert abs(v[100]) < 1e-15  # sin(0) is 0 in every implementation
    np.testing.assert_allclose([v[0], v[50]], [1.0, s(50)], **tol)
    np.testing.assert_allclose(S.values(s, [0, 50, 100]), [s(0), s(50), s(100)], **tol)
    assert S.values(0.5, 3).tolist() == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="1-D array of finite steps"):
        S.values(s, [[1, 2]])


def test_plot_draws_one_labelled_line_per_schedule(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    a, b = S.cosine(1.0, 0.0, 100), S.warmup(S.constant(1.0), 20)
    fig = S.plot(a, b, steps=120, labels=["cos", "warm"], logy=False, title="t")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["cos", "warm"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), S.values(a, 120))
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "learning rate"
    fig.savefig(tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="labels has 1 entries for 2"):
        S.plot(a, b, labels=["x"])


def test_plot_without_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install 'schedax\[plot\]'"):
        S.plot(S.constant(1.0))


def test_facade_state_is_the_step_counter_and_resumes_torch_runs():
    s = S.step(0.1, step_size=3, gamma=0.5)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    ref = torch.optim.lr_scheduler.StepLR(opt, 3, 0.5)
    ours = S.Scheduler(s)
    for _ in range(7):
        opt.step()
        ref.step()
        ours.step()
        assert ours.get_last_lr() == pytest.approx(ref.get_last_lr(), rel=1e-12)
    assert ours.state_dict() == {"last_epoch": 7}
    resumed = S.Scheduler(s)
    resumed.load_state_dict(ref.state_dict())  # a torch state dict
    assert resumed.last_epoch == 7 and resumed.get_last_lr() == ours.get_last_lr()
    with pytest.raises(ValueError, match="last_epoch"):
        resumed.load_state_dict({"lr": 3})


def test_facade_per_group():
    sch = S.Scheduler([S.constant(1.0), S.linear(0.0, 1.0, 10)])
    for _ in range(5):
        sch.step()
    assert sch.get_last_lr() == [1.0, 0.5]
