"""APGD (Croce and Hein, 2020): PGD with momentum and a step size that halves when progress stalls.

The two white-box attacks of AutoAttack's standard version are `apgd` on the
cross entropy (APGD-CE) and `apgd_targeted` on the targeted DLR loss (APGD-T,
the nine most likely wrong classes as targets, 100 iterations each). Images
are in [0, 1] and budgets in pixels (L-infinity).

The step size starts at `2 * epsilon`. At checkpoints (after 22% of the
iterations, then at intervals that shrink by 3% down to 6% of them) the step of
an example is halved, and the example restarted from its best point so far,
when fewer than `rho` of the steps since the last checkpoint raised its loss,
or when its step was not halved at the last checkpoint and its best loss has
not improved since. Each step moves `momentum` of the way to the projected
signed-gradient step and keeps `1 - momentum` of the previous step. (The first
condition is the paper's strict "fewer than"; AutoAttack's code halves at "at
most", a difference of one boundary case.)
"""

import numpy as np
import tensorflow as tf

LOSSES = ("ce", "dlr", "dlr_targeted")


def checkpoints(steps):
    """Iterations after which APGD may halve its step size.

    The first checkpoint is at 22% of the iterations; each interval is 3% of
    them shorter than the last, but at least 6% (rounded down, at least one
    iteration, as in AutoAttack).

    Args:
        steps: Int >= 1, iterations.

    Returns:
        Sorted list of ints in `[1, steps]`.
    """
    interval = max(int(0.22 * steps), 1)
    shrink, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    points, at = [], interval
    while at <= steps:
        points.append(at)
        interval = max(interval - shrink, shortest)
        at += interval
    return points


def cross_entropy(logits, y, target=None):
    """Per-example softmax cross entropy of `logits` against labels `y` (`target` unused)."""
    del target
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)


def dlr(logits, y, target=None):
    """Per-example difference of logits ratio (untargeted DLR, Croce and Hein, 2020).

    `-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`, where `z_pi1 >= z_pi2 >= ...`
    are the sorted logits: invariant to shifting and scaling the logits.

    Args:
        logits: Float tensor `(n, classes)`, `classes >= 3`.
        y: Int tensor `(n,)` of labels.
        target: Unused.

    Returns:
        Float tensor `(n,)`; positive when the example is misclassified.
    """
    del target
    top = tf.math.top_k(logits, k=3).values
    true = tf.gather(logits, y, batch_dims=1)
    other = tf.where(tf.equal(tf.argmax(logits, -1, output_type=y.dtype), y), top[:, 1], top[:, 0])
    return -(true - other) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted(logits, y, target):
    """Per-example targeted DLR loss (Croce and Hein, 2020).

    `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)` for target class `t`.

    Args:
        logits: Float tensor `(n, classes)`, `classes >= 4`.
        y: Int tensor `(n,)` of labels.
        target: Int tensor `(n,)` of target classes.

    Returns:
        Float tensor `(n,)`.
    """
    top = tf.math.top_k(logits, k=4).values
    true = tf.gather(logits, y, batch_dims=1)
    wanted = tf.gather(logits, target, batch_dims=1)
    return -(true - wanted) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


_LOSS_FNS = {"ce": cross_entropy, "dlr": dlr, "dlr_targeted": dlr_targeted}


def top_targets(logits, num_targets):
    """The `num_targets` classes ranked just below the top-1, most likely first.

    Args:
        logits: Float array or tensor `(n, classes)` on the clean images.
        num_targets: Int in `[1, classes - 1]`.

    Returns:
        Int32 tensor `(n, num_targets)`; column `j` is the class ranked `j + 2`.
    """
    classes = int(logits.shape[-1])
    if not 1 <= num_targets <= classes - 1:
        raise ValueError(
            f"`num_targets` must be in [1, {classes - 1}] for {classes} classes. Received: num_targets={num_targets}"
        )
    return tf.math.top_k(logits, k=num_targets + 1).indices[:, 1:]


def _seed_pair(seed):
    seed = np.asarray(seed, dtype=np.int64).reshape(-1)
    if seed.size == 1:
        seed = np.array([seed[0], 0], dtype=np.int64)
    if seed.size != 2:
        raise ValueError(f"`seed` must be an int or a pair of ints. Received: seed={seed.tolist()}")
    return tf.constant(seed, tf.int64)


def random_start(x, epsilon, seed):
    """A uniform random point of the eps-ball around `x`, clipped to [0, 1] (stateless, so reproducible).

    Args:
        x: Float tensor of images in [0, 1].
        epsilon: Float budget in pixels.
        seed: Int or pair of ints (`tf.random.stateless_uniform` seed).

    Returns:
        Float tensor like `x`.
    """
    noise = tf.random.stateless_uniform(tf.shape(x), _seed_pair(seed), -epsilon, epsilon, dtype=x.dtype)
    return tf.clip_by_value(x + noise, 0.0, 1.0)


def apgd(logits_of, x, y, epsilon, steps=100, loss="ce", target=None, seed=0, rho=0.75, momentum=0.75):
    """Runs APGD on a batch; returns each example's misclassified point if found, else its best point.

    For speed, `logits_of` should be a `tf.function` (see
    `robustness.logits_function`); the loop itself runs eagerly.

    Args:
        logits_of: Callable mapping a float batch of images in [0, 1] to logits.
        x: Float array or tensor of images in [0, 1], `(n, h, w, c)`.
        y: Int labels `(n,)`.
        epsilon: Float, L-infinity budget in pixels.
        steps: Int >= 1, iterations (100 in AutoAttack).
        loss: One of `LOSSES`: "ce" (APGD-CE), "dlr", "dlr_targeted" (needs `target`).
        target: Int target classes `(n,)`, only for "dlr_targeted".
        seed: Int or pair of ints, seed of the random start.
        rho: Float in (0, 1], fraction of loss-raising steps below which the step halves.
        momentum: Float in (0, 1], weight of the new step against the previous one.

    Returns:
        `(x_adv, fooled)`: float tensor like `x` within `epsilon` of `x` and in
        [0, 1]; bool tensor `(n,)`, whether some iterate was misclassified.
    """
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {LOSSES}. Received: loss={loss!r}")
    if (loss == "dlr_targeted") != (target is not None):
        raise ValueError(
            f"`target` is needed for loss='dlr_targeted' and only for it. Received: loss={loss!r}, "
            f"target={'None' if target is None else 'given'}"
        )
    if int(steps) < 1:
        raise ValueError(f"`steps` must be >= 1. Received: steps={steps}")
    if not 0.0 < rho <= 1.0 or not 0.0 < momentum <= 1.0:
        raise ValueError(f"`rho` and `momentum` must be in (0, 1]. Received: rho={rho}, momentum={momentum}")
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.int32)
    target = None if target is None else tf.convert_to_tensor(target, tf.int32)
    loss_fn = _LOSS_FNS[loss]
    low, high = tf.maximum(x - epsilon, 0.0), tf.minimum(x + epsilon, 1.0)

    def loss_and_grad(x_in):
        with tf.GradientTape() as tape:
            tape.watch(x_in)
            logits = logits_of(x_in)
            losses = loss_fn(logits, y, target)
            total = tf.reduce_sum(losses)
        return logits, losses, tape.gradient(total, x_in, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def misclassified(logits):
        return tf.not_equal(tf.argmax(logits, -1, output_type=tf.int32), y)

    x_adv = random_start(x, epsilon, seed)
    logits, loss_now, grad = loss_and_grad(x_adv)
    fooled = misclassified(logits)
    x_found = x_adv
    x_best, loss_best, grad_best = x_adv, loss_now, grad
    per_image = tf.ones([tf.shape(x)[0], 1, 1, 1])
    step = 2.0 * epsilon * per_image
    x_prev = x_adv
    raised = tf.zeros_like(loss_now)
    loss_best_at_check = loss_best
    halved_at_check = tf.ones_like(fooled)
    marks, last_mark = set(checkpoints(int(steps))), 0
    for k in range(int(steps)):
        z = tf.clip_by_value(x_adv + step * tf.sign(grad), low, high)
        weight = momentum if k > 0 else 1.0
        x_next = tf.clip_by_value(x_adv + weight * (z - x_adv) + (1.0 - weight) * (x_adv - x_prev), low, high)
        x_prev, x_adv = x_adv, x_next
        logits, loss_new, grad = loss_and_grad(x_adv)
        now_fooled = misclassified(logits)
        x_found = tf.where(now_fooled[:, None, None, None], x_adv, x_found)
        fooled = fooled | now_fooled
        raised += tf.cast(loss_new > loss_now, raised.dtype)
        loss_now = loss_new
        better = loss_new > loss_best
        x_best = tf.where(better[:, None, None, None], x_adv, x_best)
        grad_best = tf.where(better[:, None, None, None], grad, grad_best)
        loss_best = tf.where(better, loss_new, loss_best)
        if k + 1 in marks:
            stalled = raised < rho * float(k + 1 - last_mark)
            no_gain = tf.logical_not(halved_at_check) & (loss_best <= loss_best_at_check)
            halve = stalled | no_gain
            step = tf.where(halve[:, None, None, None], step / 2.0, step)
            x_adv = tf.where(halve[:, None, None, None], x_best, x_adv)
            grad = tf.where(halve[:, None, None, None], grad_best, grad)
            halved_at_check, loss_best_at_check = halve, loss_best
            raised, last_mark = tf.zeros_like(raised), k + 1
    x_out = tf.where(fooled[:, None, None, None], x_found, x_best)
    return tf.stop_gradient(x_out), fooled


def apgd_targeted(logits_of, x, y, epsilon, steps=100, num_targets=9, seed=0, rho=0.75, momentum=0.75):
    """APGD-T: APGD on the targeted DLR loss, once per target class, until an example is misclassified.

    Targets are the classes ranked 2nd to `num_targets + 1`-th on the clean
    images (AutoAttack's standard version: 9, one restart each).

    Args:
        logits_of: Callable mapping images in [0, 1] to logits (at least 4 classes).
        x: Float images in [0, 1], `(n, h, w, c)`.
        y: Int labels `(n,)`.
        epsilon: Float, L-infinity budget in pixels.
        steps: Int >= 1, iterations per target.
        num_targets: Int in `[1, classes - 1]`.
        seed: Int, seed of the random starts (target `j` uses `(seed, j)`).
        rho: Float, see `apgd`.
        momentum: Float, see `apgd`.

    Returns:
        `(x_adv, fooled)` as for `apgd`; an example not fooled keeps the last
        target's best point.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.int32)
    targets = top_targets(logits_of(x), num_targets)
    x_adv, fooled = x, tf.zeros(tf.shape(y), tf.bool)
    for j in range(num_targets):
        todo = tf.where(tf.logical_not(fooled))[:, 0]
        if int(tf.size(todo)) == 0:
            break
        x_new, fooled_new = apgd(
            logits_of,
            tf.gather(x, todo),
            tf.gather(y, todo),
            epsilon,
            steps,
            "dlr_targeted",
            tf.gather(targets[:, j], todo),
            (seed, j),
            rho,
            momentum,
        )
        x_adv = tf.tensor_scatter_nd_update(x_adv, todo[:, None], x_new)
        fooled = tf.tensor_scatter_nd_update(fooled, todo[:, None], fooled_new)
    return x_adv, fooled
