"""Robust accuracy you can trust: several attacks, the per-example worst case, and sanity checks.

`evaluate_robustness(model, x, y, attacks=...)` runs each attack on the examples
still classified correctly (an example already misclassified is not robust)
and counts an example as robust under an attack only if every restart (PGD) or
target (APGD-T) leaves it correct; the worst case over all attacks counts it as
robust only if it survives them all. Attacks are named as in the command line:
"fgsm", "pgd10" (10 steps, one random start), "pgd50x10" (50 steps, 10
restarts), "apgd_ce" and "apgd_t" (Croce and Hein, 2020; "apgd_ce50" sets the
iterations).

Every evaluation reports sanity checks (Carlini et al., 2019, "On evaluating
adversarial robustness"; Athalye et al., 2018): at `epsilon = 0` the attacked
accuracy equals the natural one; more PGD steps or restarts never raise robust
accuracy by more than noise; multi-step attacks are at least as strong as
FGSM; APGD-CE at least as strong as PGD with no more gradient steps; and a large
budget brings accuracy to about zero. Failures that point to gradient masking
are listed as warnings.
"""

import dataclasses
import math
import re
import time

import numpy as np
import tensorflow as tf

from tfrobustprune import apgd as apgd_lib
from tfrobustprune.attacks import pad_batch

KINDS = ("fgsm", "pgd", "apgd_ce", "apgd_t")
LARGE_EPSILON = 0.5  # a budget under which any classifier of natural images should fail
LARGE_BUDGET_EXAMPLES = 200
LARGE_BUDGET_MAX_ACCURACY = 0.05
APGD_T_GAP = 0.10  # APGD-T this much stronger than APGD-CE hints at a masked cross entropy

_NAME = re.compile(r"^(?:(fgsm)|pgd(\d+)(?:x(\d+))?|(apgd_ce|apgd_t)(\d+)?)$")


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """One attack of an evaluation.

    Attributes:
        name: Str, as given ("pgd50x10").
        kind: One of `KINDS`.
        steps: Int, gradient steps per run (1 for FGSM).
        runs: Int, random restarts (PGD) or target classes (APGD-T); 1 otherwise.
    """

    name: str
    kind: str
    steps: int
    runs: int = 1

    @property
    def gradient_steps(self):
        """Int, gradient evaluations per example in the worst case."""
        return self.steps * self.runs


def parse_attack(name, apgd_steps=100, apgd_targets=9):
    """Parses an attack name: "fgsm", "pgdK", "pgdKxR", "apgd_ce[K]", "apgd_t[K]".

    Args:
        name: Str.
        apgd_steps: Int, APGD iterations when the name gives none.
        apgd_targets: Int, target classes of "apgd_t".

    Returns:
        An `AttackSpec`.
    """
    name = name.strip()
    match = _NAME.match(name)
    if not match:
        raise ValueError(
            "`attack` must be fgsm, pgdK, pgdKxR (K steps, R restarts), apgd_ce[K] or apgd_t[K]. "
            f"Received: attack={name!r}"
        )
    fgsm, pgd_steps, restarts, apgd_kind, apgd_k = match.groups()
    if fgsm:
        return AttackSpec(name, "fgsm", 1)
    if pgd_steps:
        spec = AttackSpec(name, "pgd", int(pgd_steps), int(restarts or 1))
    else:
        steps = int(apgd_k) if apgd_k else int(apgd_steps)
        spec = AttackSpec(name, apgd_kind, steps, int(apgd_targets) if apgd_kind == "apgd_t" else 1)
    if spec.steps < 1 or spec.runs < 1:
        raise ValueError(f"`attack` needs at least one step and one run. Received: attack={name!r}")
    return spec


def parse_attacks(names, apgd_steps=100, apgd_targets=9):
    """Parses a comma-separated string or a list of attack names into `AttackSpec`s (duplicates rejected)."""
    if isinstance(names, str):
        names = names.split(",")
    names = [n.strip() for n in names if n.strip()]
    specs = [parse_attack(n, apgd_steps, apgd_targets) for n in names]
    seen = [s.name for s in specs]
    if len(set(seen)) != len(seen):
        raise ValueError(f"`attacks` must not repeat a name. Received: attacks={seen}")
    return specs


def logits_function(model):
    """`model(x, training=False)` as a `tf.function` that accepts any batch size."""
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def pgd(logits_of, x, y, epsilon, step, steps, seed=0, random_start=True):
    """PGD on the cross entropy from a uniform random start (Madry et al., 2018); returns the last iterate.

    Like `attacks.pgd`, but with a stateless, seeded random start, so every
    restart of every batch is reproducible, and a zero gradient (not an error)
    where the model has none. FGSM is `pgd(..., epsilon, epsilon, 1, random_start=False)`.

    Args:
        logits_of: Callable mapping images in [0, 1] to logits.
        x: Float images in [0, 1].
        y: Int labels.
        epsilon: Float, L-infinity budget in pixels.
        step: Float step size.
        steps: Int >= 0, iterations.
        seed: Int or pair of ints, seed of the random start.
        random_start: Bool; False starts from `x`.

    Returns:
        Float tensor like `x`, within `epsilon` of `x` and in [0, 1].
    """
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.int32)
    low, high = tf.maximum(x - epsilon, 0.0), tf.minimum(x + epsilon, 1.0)

    def loss_of(x_in):
        return tf.reduce_sum(apgd_lib.cross_entropy(logits_of(x_in), y))

    x_adv = apgd_lib.random_start(x, epsilon, seed) if random_start else x
    for _ in range(int(steps)):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            loss = loss_of(x_adv)
        grad = tape.gradient(loss, x_adv, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        x_adv = tf.clip_by_value(x_adv + step * tf.sign(grad), low, high)
    return tf.stop_gradient(x_adv)


def craft(spec, logits_of, x, y, epsilon, step, run=0, seed=0, targets=None):
    """Adversarial images for one run (restart or target) of an attack on a batch.

    Args:
        spec: An `AttackSpec`.
        logits_of: Callable mapping images in [0, 1] to logits (the attacked, or surrogate, model).
        x: Float images in [0, 1].
        y: Int labels.
        epsilon: Float budget in pixels.
        step: Float PGD step size (FGSM steps `epsilon`; APGD sets its own).
        run: Int, restart or target index.
        seed: Int or pair of ints.
        targets: Int `(n, runs)` target classes, for "apgd_t".

    Returns:
        Float tensor like `x`.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.int32)
    if spec.kind == "fgsm":
        return pgd(logits_of, x, y, epsilon, epsilon, 1, random_start=False)
    if spec.kind == "pgd":
        return pgd(logits_of, x, y, epsilon, step, spec.steps, seed)
    if spec.kind == "apgd_ce":
        return apgd_lib.apgd(logits_of, x, y, epsilon, spec.steps, "ce", seed=seed)[0]
    if spec.kind == "apgd_t":
        return apgd_lib.apgd(logits_of, x, y, epsilon, spec.steps, "dlr_targeted", targets[:, run], seed)[0]
    raise ValueError(f"`spec.kind` must be one of {KINDS}. Received: kind={spec.kind!r}")


def predict_labels(predict, x, batch_size):
    """Argmax labels of `predict` (images in [0, 1] -> logits) over a float numpy array, in batches."""
    labels = [np.argmax(np.asarray(predict(x[i : i + batch_size])), -1) for i in range(0, len(x), batch_size)]
    return np.concatenate(labels).astype(np.int32) if labels else np.zeros([0], np.int32)


def robust_under(spec, logits_of, predict, x, y, correct, epsilon, step, batch_size=256, seed=0, progress=None):
    """Per-example robustness under one attack: still correct after every run.

    Only examples still correct are attacked; each run (PGD restart, APGD-T
    target) attacks those that survived the previous runs.

    Args:
        spec: An `AttackSpec`.
        logits_of: Callable, the model the gradients come from.
        predict: Callable, the model judged (the same model, or the target of a transfer attack).
        x: Float numpy images in [0, 1].
        y: Int numpy labels.
        correct: Bool numpy array, examples correct on clean images.
        epsilon: Float budget in pixels.
        step: Float PGD step size.
        batch_size: Int.
        seed: Int.
        progress: Object with `update(n)` (e.g. tqdm) advanced per example and run, or None.

    Returns:
        Bool numpy array, robust examples.
    """
    robust = np.array(correct, dtype=bool)
    targets = None
    if spec.kind == "apgd_t":
        idx = np.flatnonzero(robust)
        targets = np.zeros([len(x), spec.runs], np.int32)
        for i in range(0, len(idx), batch_size):
            part = idx[i : i + batch_size]
            targets[part] = apgd_lib.top_targets(logits_of(tf.constant(x[part])), spec.runs).numpy()
    for run in range(spec.runs):
        idx = np.flatnonzero(robust)
        if progress is not None:
            progress.update(len(x) - len(idx))
        for i in range(0, len(idx), batch_size):
            part = idx[i : i + batch_size]
            padded = pad_batch(part)
            batch_targets = None if targets is None else tf.constant(targets[padded])
            x_adv = craft(
                spec, logits_of, x[padded], y[padded], epsilon, step, run, (seed, run * 1_000_003 + i), batch_targets
            )
            robust[part] = predict_labels(predict, np.asarray(x_adv)[: len(part)], batch_size) == y[part]
            if progress is not None:
                progress.update(len(part))
    return robust


def noise(accuracy, n):
    """Float, the sampling noise of an accuracy over `n` examples: one standard error, at least one example."""
    return max(1.0 / max(n, 1), math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / max(n, 1)))


@dataclasses.dataclass
class Report:
    """What `evaluate_robustness` measured.

    Attributes:
        num_examples: Int.
        epsilon: Float budget in pixels.
        step: Float PGD step size.
        natural_accuracy: Float.
        robust_accuracy: Dict attack name -> float accuracy.
        worst_case_accuracy: Float, examples robust under every attack (natural
            accuracy when no attack ran).
        checks: List of dicts `{name, status ("pass", "fail", "skip"), detail}`.
        warnings: List of str: failed checks and signs of gradient masking.
        seconds: Dict attack name -> float wall time.
        transfer: Bool, the attacks were crafted on a surrogate model.
        robust: Dict attack name -> bool numpy array per example (not in `to_json`).
    """

    num_examples: int
    epsilon: float
    step: float
    natural_accuracy: float
    robust_accuracy: dict
    worst_case_accuracy: float
    checks: list
    warnings: list
    seconds: dict
    transfer: bool = False
    robust: dict = dataclasses.field(default_factory=dict, repr=False)

    def to_json(self):
        """A JSON-serialisable dict of everything but the per-example arrays."""
        out = dataclasses.asdict(self)
        del out["robust"]
        return out

    def table(self):
        """A plain-text table: one row per attack, the worst case, the checks and warnings."""
        rows = [("natural", self.natural_accuracy, "")]
        rows += [(name, acc, f"{self.seconds.get(name, 0.0):.0f} s") for name, acc in self.robust_accuracy.items()]
        if self.robust_accuracy:
            rows.append(("worst case", self.worst_case_accuracy, ""))
        width = max(len(r[0]) for r in rows) + 2
        kind = "transfer (surrogate gradients)" if self.transfer else "white-box"
        lines = [
            f"{self.num_examples} examples, epsilon {self.epsilon * 255:.4g}/255, {kind}",
            f"{'attack':<{width}}{'accuracy':>10}  time",
        ]
        lines += [f"{name:<{width}}{acc * 100:>9.2f}%  {secs}" for name, acc, secs in rows]
        lines += ["", "sanity checks:"]
        lines += [f"  {c['status'].upper():<5} {c['name']}: {c['detail']}" for c in self.checks]
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def _check(name, passed, detail):
    return {"name": name, "status": "skip" if passed is None else ("pass" if passed else "fail"), "detail": detail}


def sanity_checks(
    natural, accuracy, specs, n, epsilon, transfer=False, eps0_accuracy=None, large_accuracy=None, large_n=0
):
    """Sanity checks of an evaluation and the signs of gradient masking among their failures.

    Args:
        natural: Float natural accuracy.
        accuracy: Dict attack name -> robust accuracy.
        specs: List of the `AttackSpec`s behind `accuracy`.
        n: Int, examples.
        epsilon: Float budget of the attacks.
        transfer: Bool, attacks crafted on a surrogate (weak attacks are then no sign of masking).
        eps0_accuracy: Float, accuracy under PGD with `epsilon = 0`, or None (skipped).
        large_accuracy: Float, accuracy under PGD with `LARGE_EPSILON`, or None (skipped).
        large_n: Int, examples behind `large_accuracy`.

    Returns:
        `(checks, warnings)`: list of check dicts, list of warning strings.
    """
    checks, warnings = [], []
    if eps0_accuracy is None:
        checks.append(_check("eps0_is_natural", None, "not run"))
    else:
        ok = abs(eps0_accuracy - natural) < 0.5 / max(n, 1)
        checks.append(_check("eps0_is_natural", ok, f"PGD at eps=0 {eps0_accuracy:.2%} vs natural {natural:.2%}"))
        if not ok:
            warnings.append(
                "PGD at eps=0 differs from natural accuracy: the attack pipeline changes predictions "
                "(training-mode layers, preprocessing or randomness in the model)."
            )

    pgds = [s for s in specs if s.kind == "pgd"]
    pairs = [(a, b) for a in pgds for b in pgds if a != b and b.steps >= a.steps and b.runs >= a.runs]
    bad = [(a, b) for a, b in pairs if accuracy[b.name] > accuracy[a.name] + noise(accuracy[a.name], n)]
    detail = "; ".join(f"{b.name} {accuracy[b.name]:.2%} <= {a.name} {accuracy[a.name]:.2%}" for a, b in pairs)
    checks.append(_check("more_steps_not_weaker", None if not pairs else not bad, detail or "needs two PGD attacks"))
    if bad:
        warnings.append(
            "Gradient masking sign: more PGD steps or restarts raised robust accuracy ("
            + ", ".join(f"{b.name} {accuracy[b.name]:.2%} > {a.name} {accuracy[a.name]:.2%}" for a, b in bad)
            + ")."
        )

    fgsm = [s for s in specs if s.kind == "fgsm"]
    multi = [s for s in specs if s.kind != "fgsm"]
    if fgsm and multi:
        f = accuracy[fgsm[0].name]
        bad = [s for s in multi if accuracy[s.name] > f + noise(f, n)]
        detail = "; ".join(f"{s.name} {accuracy[s.name]:.2%}" for s in multi) + f" <= fgsm {f:.2%}"
        checks.append(_check("multi_step_at_most_fgsm", not bad, detail))
        if bad:
            warnings.append(
                "Gradient masking sign: the single-step FGSM is stronger than " + ", ".join(s.name for s in bad) + "."
            )
    else:
        checks.append(_check("multi_step_at_most_fgsm", None, "needs fgsm and a multi-step attack"))

    apgd_ce = [s for s in specs if s.kind == "apgd_ce"]
    pairs = [(a, p) for a in apgd_ce for p in pgds if p.gradient_steps <= a.gradient_steps]
    bad = [(a, p) for a, p in pairs if accuracy[a.name] > accuracy[p.name] + noise(accuracy[p.name], n)]
    detail = "; ".join(f"{a.name} {accuracy[a.name]:.2%} <= {p.name} {accuracy[p.name]:.2%}" for a, p in pairs)
    checks.append(
        _check(
            "apgd_ce_at_most_pgd",
            None if not pairs else not bad,
            detail or "needs apgd_ce and a PGD attack with no more gradient steps",
        )
    )
    if bad:
        warnings.append("APGD-CE is weaker than PGD with no more gradient steps: check the attack implementation.")

    apgd_t = [s for s in specs if s.kind == "apgd_t"]
    if apgd_ce and apgd_t:
        gap = accuracy[apgd_ce[0].name] - accuracy[apgd_t[0].name]
        ok = gap <= max(APGD_T_GAP, 3 * noise(accuracy[apgd_ce[0].name], n))
        checks.append(
            _check(
                "apgd_t_close_to_apgd_ce", ok, f"APGD-CE - APGD-T = {gap * 100:.2f} pp (<= {APGD_T_GAP * 100:.0f} pp)"
            )
        )
        if not ok:
            warnings.append(
                "Gradient masking sign: the targeted DLR attack is much stronger than the cross entropy "
                "(a saturated softmax can hide the CE gradient)."
            )

    if multi and epsilon > 0 and not transfer:
        strongest = min(accuracy[s.name] for s in multi)
        near = natural > 0 and natural - strongest <= noise(natural, n)
        checks.append(
            _check(
                "multi_step_lowers_accuracy", not near, f"strongest multi-step {strongest:.2%} vs natural {natural:.2%}"
            )
        )
        if near:
            warnings.append("Gradient masking sign: multi-step attacks barely lower accuracy below natural accuracy.")

    if large_accuracy is None:
        checks.append(_check("large_budget_breaks_model", None, "not run"))
    else:
        ok = large_accuracy <= LARGE_BUDGET_MAX_ACCURACY
        checks.append(
            _check(
                "large_budget_breaks_model",
                ok,
                f"PGD-20 at eps={LARGE_EPSILON} on {large_n} examples: "
                f"{large_accuracy:.2%} (<= {LARGE_BUDGET_MAX_ACCURACY:.0%})",
            )
        )
        if not ok:
            warnings.append("Gradient masking sign: a very large budget does not bring accuracy to about zero.")
    return checks, warnings


def evaluate_robustness(
    model,
    x,
    y,
    attacks=("fgsm", "pgd10"),
    epsilon=8 / 255,
    step=2 / 255,
    batch_size=256,
    seed=0,
    predict=None,
    apgd_steps=100,
    apgd_targets=9,
    checks=True,
    progress=False,
):
    """Natural, per-attack and worst-case robust accuracy, with sanity checks.

    Args:
        model: Keras model (or callable) mapping images in [0, 1] to logits;
            gradients come from it. May be None when `predict` is given, no
            attack is asked for and `checks` is False (natural accuracy only).
        x: Images, uint8 (divided by 255) or float in [0, 1], `(n, h, w, c)`.
        y: Int labels `(n,)`.
        attacks: Attack names (see `parse_attack`) or a comma-separated string.
        epsilon: Float in [0, 1], L-infinity budget in pixels.
        step: Float > 0, PGD step size.
        batch_size: Int >= 1.
        seed: Int, seed of all random starts.
        predict: Callable, numpy images -> logits, of the model judged; None:
            `model` itself. Given, the attacks are transfer attacks crafted on
            `model` (a surrogate) and the gradient-based checks are skipped.
        apgd_steps: Int, APGD iterations for "apgd_ce" and "apgd_t".
        apgd_targets: Int, target classes of "apgd_t" (9 in AutoAttack).
        checks: Bool, run the extra sanity attacks (eps = 0, large budget).
        progress: Bool, show a progress bar (tqdm, on stderr).

    Returns:
        A `Report`.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"`epsilon` must be in [0, 1] (pixels, e.g. 8/255). Received: epsilon={epsilon}")
    if step <= 0:
        raise ValueError(f"`step` must be > 0. Received: step={step}")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
    specs = parse_attacks(attacks, apgd_steps, apgd_targets)
    x = np.asarray(x)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    y = np.asarray(y).astype(np.int32)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"`x` and `y` must hold the same, non-zero number of examples. Received: {len(x)} images, {len(y)} labels"
        )
    if model is None and (specs or checks or predict is None):
        raise ValueError("`model` is needed for attacks and checks (gradients come from it). Received: model=None")
    logits_of = None if model is None else logits_function(model)
    transfer = predict is not None
    if predict is None:
        predict = logits_of
    n = len(x)
    correct = predict_labels(predict, x, batch_size) == y
    natural = float(correct.mean())

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n * sum(s.runs for s in specs), unit="ex", desc="attacks")
    robust, accuracy, seconds = {}, {}, {}
    for i, spec in enumerate(specs):
        if bar is not None:
            bar.set_postfix_str(spec.name)
        start = time.time()
        robust[spec.name] = robust_under(
            spec, logits_of, predict, x, y, correct, epsilon, step, batch_size, seed + 7919 * i, bar
        )
        accuracy[spec.name] = float(robust[spec.name].mean())
        seconds[spec.name] = time.time() - start
    if bar is not None:
        bar.close()
    worst = np.logical_and.reduce([correct, *robust.values()])

    eps0 = large = None
    large_n = 0
    if checks:
        zero = AttackSpec("pgd2@eps0", "pgd", 2)
        eps0 = float(robust_under(zero, logits_of, predict, x, y, np.ones(n, bool), 0.0, step, batch_size, seed).mean())
        if not transfer and epsilon > 0:
            large_n = min(n, LARGE_BUDGET_EXAMPLES)
            big = AttackSpec("pgd20@large", "pgd", 20)
            large = float(
                robust_under(
                    big,
                    logits_of,
                    predict,
                    x[:large_n],
                    y[:large_n],
                    correct[:large_n],
                    LARGE_EPSILON,
                    LARGE_EPSILON / 8,
                    batch_size,
                    seed,
                ).mean()
            )
    check_list, warnings = sanity_checks(natural, accuracy, specs, n, epsilon, transfer, eps0, large, large_n)
    return Report(
        n,
        float(epsilon),
        float(step),
        natural,
        accuracy,
        float(worst.mean()),
        check_list,
        warnings,
        seconds,
        transfer,
        robust,
    )
