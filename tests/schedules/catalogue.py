"""One or more instances of every public schedule, shared by the algebra tests."""

import schedules as S

PRIMITIVES = {
    "constant": S.constant(3e-4),
    "linear": S.linear(0.0, 1e-3, 100),
    "linear_up_down": S.linear(2.0, 0.5, 37),
    "linear_zero_steps": S.linear(1.0, 0.25, 0),
    "cosine": S.cosine(1e-3, 1e-5, 500),
    "cosine_exponent": S.cosine(1.0, 0.1, 300, exponent=2.5),
    "exponential": S.exponential(1.0, 0.97),
    "exponential_staircase": S.exponential(0.5, 0.5, steps=50, staircase=True),
    "exponential_bounded": S.exponential(1.0, 0.9, steps=7, end=0.05),
    "exponential_growth_bounded": S.exponential(1e-4, 1.05, end=1e-2),
    "step": S.step(0.1, step_size=30, gamma=0.5),
    "multistep": S.multistep(1.0, [10, 50, 50, 200], gamma=0.3),
    "polynomial": S.polynomial(1.0, 0.01, 400, power=2.0),
    "polynomial_sqrt": S.polynomial(1.0, 0.0, 250, power=0.5),
    "inverse_sqrt": S.inverse_sqrt(1e-3, warmup=40),
    "inverse_sqrt_timescale": S.inverse_sqrt(1e-3, warmup=0, timescale=100),
    "noam": S.noam(d_model=256, warmup=60),
    "wsd_linear": S.wsd(1.0, total=600, warmup=50, decay=100),
    "wsd_cosine": S.wsd(2.0, total=600, warmup=0, decay=300, end=0.1, shape="cosine"),
    "wsd_sqrt": S.wsd(1.0, total=400, warmup=20, decay=100, init=0.1, shape="1-sqrt"),
    "cyclic_triangular": S.cyclic(0.1, 1.0, up=20),
    "cyclic_triangular2": S.cyclic(0.01, 0.1, up=15, down=35, mode="triangular2"),
    "cyclic_exp_range": S.cyclic(0.01, 0.1, up=25, mode="exp_range", gamma=0.995),
    "one_cycle": S.one_cycle(0.1, total=500),
    "one_cycle_linear_3": S.one_cycle(
        0.1, total=333, pct_start=0.25, anneal="linear", three_phase=True
    ),
    "cosine_restarts": S.cosine_restarts(1.0, 0.01, period=50),
    "cosine_restarts_mult": S.cosine_restarts(1.0, 0.0, period=10, period_mult=2, decay=0.8),
    "cosine_restarts_limited": S.cosine_restarts(
        1.0, 0.1, period=30, period_mult=1.5, max_cycles=3
    ),
    "tanh_decay": S.tanh_decay(1.0, 0.01, 400),
    "piecewise_constant": S.piecewise_constant([100, 300], [1.0, 0.1, 0.01]),
    "piecewise_linear": S.piecewise_linear([0, 50, 400, 600], [0.0, 1.0, 0.2, 0.0]),
    "noise": S.noise(seed=7, low=0.5, high=1.5),
}

COMBINATORS = {
    "join": S.join(S.linear(0.0, 1.0, 100), S.cosine(1.0, 0.1, 900), at=[100]),
    "join_global": S.join(
        S.constant(1.0), S.step(1.0, 100, 0.5), S.constant(0.01), at=[150, 500], global_step=True
    ),
    "multiply": S.multiply(S.cosine(1.0, 0.0, 800), S.linear(0.5, 1.0, 100), S.constant(2.0)),
    "mul_operator": S.linear(0.0, 1.0, 50) * S.exponential(1.0, 0.99),
    "scale": 0.1 * S.cosine(1.0, 0.0, 300),
    "div": S.cyclic(0.1, 1.0, up=30) / 4,
    "add": S.cosine(1.0, 0.0, 400) + S.constant(0.05),
    "minimum": S.minimum(S.linear(0.0, 2.0, 200), S.constant(1.0), S.exponential(3.0, 0.99)),
    "maximum": S.maximum(S.cosine(1.0, 0.0, 300), S.constant(0.2)),
    "clip": S.clip(S.cyclic(0.0, 1.0, up=40), low=0.2, high=0.7),
    "clip_low": S.clip(S.exponential(1.0, 0.98), low=0.1),
    "shift": S.shift(S.cosine(1.0, 0.0, 200), 50),
    "shift_back": S.shift(S.linear(0.0, 1.0, 200), -40),
    "repeat": S.repeat(S.linear(1.0, 0.0, 60), period=60, decay=0.7),
    "repeat_growing": S.repeat(S.cosine(1.0, 0.1, 40), period=40, period_mult=2, max_cycles=3),
    "warmup": S.warmup(S.cosine(3e-4, 3e-5, 900), 100),
    "warmup_init": S.warmup(S.step(1.0, 100, 0.5), 30, init=0.1),
    "lambda": S.lambda_(lambda t: 0.95 ** (t // 10)),
    "expr": S.expr("0.95 ** (step // 10)"),
    "expr_rich": S.expr("min(1, (step + 1) / 50) * (0.5 * (1 + cos(pi * min(step, 500) / 500)))"),
    "expr_ifexp": S.expr("1.0 if step < 100 else (0.1 if step < 300 else 0.01)"),
    "scale_batch_linear": S.scale_batch(S.cosine(0.1, 0.0, 500), 1024, 256),
    "scale_batch_sqrt": S.scale_batch(S.cosine(0.1, 0.0, 500), 1024, 256, rule="sqrt"),
    "scale_batch_blend": S.scale_batch(S.cosine(0.1, 0.0, 500), 1024, 256, rule="blend"),
    "scale_batch_crossover": S.scale_batch(S.constant(0.1), 4096, 256, rule="crossover",
                                           crossover=1024),
    "scale_batch_ramp": S.scale_batch(S.cosine(0.1, 0.0, 500), S.linear(256.0, 1024.0, 300), 256,
                                      rule="blend"),
    "noisy": S.cosine(1.0, 0.1, 400) * S.noise(seed=3, low=0.9, high=1.1),
    "nested": S.join(
        S.warmup(S.constant(1.0), 20),
        S.repeat(S.cosine(1.0, 0.2, 100), period=100, decay=0.5) * S.linear(1.0, 0.5, 300),
        S.clip(S.exponential(0.3, 0.99), low=0.01),
        at=[50, 350],
    ),
}

ALL = {**PRIMITIVES, **COMBINATORS}
SERIALIZABLE = {k: v for k, v in ALL.items() if k != "lambda"}
