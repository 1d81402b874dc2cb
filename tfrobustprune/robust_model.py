"""`RobustPruneModel`: adversarial training with a hardware-cost loss on a gated network."""

import keras
import tensorflow as tf
from keras import ops

from tfrobustprune import attacks as attacks_lib
from tfrobustprune.cost import COST_METRICS, CostModel
from tfrobustprune.gating import gate_layers
from tfrobustprune.magnitude import filter_l1_norm_tensors

HW_LOSSES = ("two_sided", "hinge")


def scale_by_shared_rms(grads, mean_square, decay=0.999, active=True):
    """Divides gradients by a running RMS shared by all of them (one scalar, not one per entry).

    Args:
        grads: List of gradient tensors.
        mean_square: Scalar `keras.Variable`, running mean of the squared
            gradient entries; 0 means "not started" and takes the first value.
        decay: Float, running-average decay.
        active: Bool or scalar bool tensor; when False the running mean is
            left as it is (steps that will not be applied must not tune it).

    Returns:
        List of scaled gradients.
    """
    count = sum(int(g.shape.num_elements()) for g in grads)
    batch_ms = sum(ops.sum(ops.square(g)) for g in grads) / count
    updated = ops.where(mean_square > 0.0, decay * mean_square + (1.0 - decay) * batch_ms, batch_ms)
    mean_square.assign(ops.where(active, updated, mean_square))
    return [g / (ops.sqrt(updated) + 1e-12) for g in grads]


@keras.saving.register_keras_serializable(package="tfrobustprune")
class RobustPruneModel(keras.Model):
    """Trains a gated network on adversarial examples with a hardware loss.

    Each training step crafts adversarial examples with the chosen attack, then
    minimises

        cross_entropy(model(x_adv), y) + hw_lambda * |cost / target - 1|

    (or the hinge `max(cost / target - 1, 0)`, see `hardware_loss`)

    where `cost` is the model's parameter or MAC count relative to the dense
    network, a differentiable function of the channel gates (`CostModel`).
    Network weights use the compiled optimizer. Gate logits use their own plain
    SGD on the gate gradient divided by a running RMS shared by all gates
    (`scale_by_shared_rms`): steps are about `gate_learning_rate` whatever the
    loss scale, yet keep the relative sizes of the gradients, so (at
    `cost_sensitivity=1`) channels close in the order of (marginal cost minus
    importance). Per-logit normalisation (Adam) moves every logit at the same
    speed: all gates cross the threshold together and the network collapses
    to its floors. Weight decay never touches the gates. While `hw_lambda` is
    0 (a dense warm-up) the gates and the running RMS hold still: alone, the
    task gradient on a gate is that of a channel scale, not an importance.

    `cost_sensitivity` sets how much a channel's own cost drives its closing.
    The exact gradient (1.0) charges each channel the marginal cost of its
    group, so the costliest channels close first, whatever their importance:
    on ResNet20 at a parameter target they are the stage-3 residual stream
    and its blocks, while stages 1-2 stay whole. At 0.0 every channel is
    charged the mean marginal cost per open channel; values between
    interpolate geometrically, `mean^(1-s) * own^s`. Either way the task
    gradient ranks channels only within a group: it sums to zero over the
    channels of any group that reaches the loss through a batch norm (scale
    invariance; `benchmarks/gate_gradient_bias.py`), so it cannot say how many
    channels a group should keep. The one group read without a norm (the last
    residual stream, read by the classifier) gets a net push toward closing
    instead, a logit-scale effect; `center_task_gradient` removes it.

    `importance_pressure` gives the gates the between-group signal the task
    gradient lacks: each channel's hardware pressure is multiplied by
    `rel ** -p` while the loss closes channels (`rel ** p` while it reopens
    them), where `rel` is the L1 norm of the weights producing the channel
    divided by the mean over its group's open channels (clipped to [0.1, 10];
    for a residual stream, summed over every layer writing to it), the
    criterion of L1 filter pruning (`magnitude`). Channels that are weak for
    their group then close first, wherever they are, and strong closed ones
    reopen first. The factors are not normalised, so a group whose norms are
    spread out also feels more pressure in total (`mean(rel ** -p) >= 1`).
    `hw_lambda` and the gate learning rate are variables: `RobustPruneCallback`
    schedules the first and freezes the gates by zeroing the second.

    Args:
        network: A gated functional model (`tfrobustprune.gate(...)`) mapping
            images in [0, 1] to logits.
        attack: One of "fgsm_rs" (default), "n_fgsm", "pgd", "fgsm", "none".
        epsilon: Float in [0, 1], L-infinity budget in pixels (8/255 on CIFAR-10).
        step: Float or None; None picks the attack's usual step (1.25 * eps for
            fgsm_rs, eps for n_fgsm, min(2/255, eps/4) for pgd).
        pgd_steps: Int, iterations of the "pgd" training attack.
        noise: Float or None (2 * epsilon), half-width of the "n_fgsm" attack's uniform noise in pixels.
        cost_metric: "params" or "macs".
        target_ratio: Float in (0, 1], target cost relative to the dense network.
        hw_lambda: Float >= 0, initial weight of the hardware loss; while it
            is 0 the gates hold still.
        gate_learning_rate: Float > 0, RMS step of the gate logits per training step.
        hw_loss: "two_sided" (default) or "hinge", see `hardware_loss`.
        cost_sensitivity: Float in [0, 1], see above; 1.0 (default) is the
            exact gradient of the hardware loss.
        importance_pressure: Float >= 0, the exponent `p` above; 0.0
            (default) leaves the pressure as `cost_sensitivity` sets it.
        center_task_gradient: Bool, subtract from each gate group's
            `dL/dmask` its mean over the open channels (`centred_task_gradients`),
            so it sums to zero there, as it already does in every group
            followed by a batch norm; in effect only the last stream changes.
        weight_decay: Float >= 0, coupled L2 decay: `weight_decay * w` is added
            to each weight's gradient before the optimizer step, as
            `torch.optim.SGD(weight_decay=...)` does (gates excluded). Under
            momentum `m` it decays `1 / (1 - m)` times as strongly as Keras'
            decoupled `SGD(weight_decay=...)` of the same value. 0 disables it.
        seed: Int seed of the attack's random starts.
        **kwargs: `keras.Model` keyword arguments, e.g. `name`.

    Example:

    >>> model = RobustPruneModel(tfrobustprune.gate(resnet20()), target_ratio=0.5)
    >>> model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> model.fit(train_ds, epochs=30, callbacks=[RobustPruneCallback(lambda_max=2.0)])  # doctest: +SKIP
    """

    def __init__(
        self,
        network,
        attack="fgsm_rs",
        epsilon=8 / 255,
        step=None,
        pgd_steps=10,
        noise=None,
        cost_metric="macs",
        target_ratio=0.5,
        hw_lambda=0.0,
        gate_learning_rate=0.01,
        hw_loss="two_sided",
        cost_sensitivity=1.0,
        importance_pressure=0.0,
        center_task_gradient=False,
        weight_decay=0.0,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if attack not in attacks_lib.ATTACKS:
            raise ValueError(f"`attack` must be one of {attacks_lib.ATTACKS}. Received: attack={attack!r}")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"`epsilon` must be in [0, 1] (pixels, e.g. 8/255). Received: epsilon={epsilon}")
        if cost_metric not in COST_METRICS:
            raise ValueError(f"`cost_metric` must be one of {COST_METRICS}. Received: cost_metric={cost_metric!r}")
        if not 0.0 < target_ratio <= 1.0:
            raise ValueError(f"`target_ratio` must be in (0, 1]. Received: target_ratio={target_ratio}")
        if hw_loss not in HW_LOSSES:
            raise ValueError(f"`hw_loss` must be one of {HW_LOSSES}. Received: hw_loss={hw_loss!r}")
        if hw_lambda < 0:
            raise ValueError(f"`hw_lambda` must be >= 0. Received: hw_lambda={hw_lambda}")
        if gate_learning_rate <= 0:
            raise ValueError(f"`gate_learning_rate` must be > 0. Received: gate_learning_rate={gate_learning_rate}")
        if not 0.0 <= cost_sensitivity <= 1.0:
            raise ValueError(f"`cost_sensitivity` must be in [0, 1]. Received: cost_sensitivity={cost_sensitivity}")
        if (
            isinstance(importance_pressure, bool)
            or not isinstance(importance_pressure, int | float)
            or not 0 <= importance_pressure < float("inf")
        ):
            raise ValueError(
                f"`importance_pressure` must be a finite number >= 0. Received: importance_pressure={importance_pressure!r}"
            )
        if not isinstance(center_task_gradient, bool):
            raise ValueError(
                f"`center_task_gradient` must be a bool. Received: center_task_gradient={center_task_gradient!r}"
            )
        if not weight_decay >= 0:
            raise ValueError(f"`weight_decay` must be >= 0. Received: weight_decay={weight_decay}")
        self.network = network
        self.attack, self.epsilon, self.step, self.pgd_steps = attack, float(epsilon), step, int(pgd_steps)
        self.noise = None if noise is None else float(noise)
        self.cost_metric, self.target_ratio = cost_metric, float(target_ratio)
        self.initial_hw_lambda, self.gate_learning_rate = float(hw_lambda), float(gate_learning_rate)
        self.hw_loss, self.cost_sensitivity = hw_loss, float(cost_sensitivity)
        self.importance_pressure, self.center_task_gradient = float(importance_pressure), center_task_gradient
        self.weight_decay = float(weight_decay)
        self.cost_model = CostModel(network)
        self.gates = gate_layers(network)
        # The cost model's group id of each gate, in the order of `gates` (None: a gate outside any group).
        gid_of_layer = {id(layer): gid for gid, layer in self.cost_model.gates.items()}
        self._gate_gids = tuple(gid_of_layer.get(id(g)) for g in self.gates)
        if not self.gates:
            raise ValueError("`network` has no ChannelGate layers; pass `tfrobustprune.gate(model)`.")
        # The attack's random starts are stateless in (seed, step counter); the counter is a model
        # variable saved by checkpoints, so a resumed run draws the same noise as an uninterrupted one.
        self.seed = int(seed)
        self.attack_counter = keras.Variable(0, dtype="int64", trainable=False, name="attack_counter")
        self._attack_fn = attacks_lib.make_training_attack(attack, self.epsilon, step, pgd_steps, self.noise)
        self.hw_lambda = keras.Variable(self.initial_hw_lambda, trainable=False, name="hw_lambda")
        # The cost ratio the hardware loss pulls toward now; `RobustPruneCallback` can glide it from 1 down to
        # `target_ratio` so channels close a few at a time instead of all in the first epoch of the loss.
        self.hw_target = keras.Variable(self.target_ratio, trainable=False, name="hw_target")
        self.gate_optimizer = keras.optimizers.SGD(self.gate_learning_rate, name="gate_sgd")
        self.gate_grad_ms = keras.Variable(0.0, trainable=False, name="gate_grad_mean_square")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.hw_tracker = keras.metrics.Mean(name="hw_loss")
        self.ratio_tracker = keras.metrics.Mean(name="cost_ratio")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.built = True  # the network is a built functional model

    def set_training_attack(self, attack, step=None, pgd_steps=None, noise=None):
        """Switches the attack of the training step, e.g. to PGD-2 after catastrophic overfitting.

        Args:
            attack: One of `attacks.ATTACKS`.
            step: Float or None (the attack's usual step).
            pgd_steps: Int or None (keep the current), iterations of "pgd".
            noise: Float or None (2 * epsilon), half-width of the "n_fgsm" attack's noise; only for "n_fgsm".

        Raises:
            ValueError: for an unknown attack, or `noise` with another attack than "n_fgsm".
        """
        if attack not in attacks_lib.ATTACKS:
            raise ValueError(f"`attack` must be one of {attacks_lib.ATTACKS}. Received: attack={attack!r}")
        pgd_steps = self.pgd_steps if pgd_steps is None else int(pgd_steps)
        self._attack_fn = attacks_lib.make_training_attack(attack, self.epsilon, step, pgd_steps, noise)
        self.attack, self.step, self.pgd_steps = attack, step, pgd_steps
        self.noise = None if noise is None else float(noise)
        if self.train_function is not None:  # `fit` calls `self.train_function` afresh every step
            self.make_train_function(force=True)

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    @property
    def gate_variables(self):
        """The gate logits (trained by `gate_optimizer`)."""
        return [g.logits for g in self.gates]

    @property
    def weight_variables(self):
        """Trainable variables other than gate logits (trained by `optimizer`)."""
        gate_ids = {id(v) for v in self.gate_variables}
        return [v for v in self.network.trainable_variables if id(v) not in gate_ids]

    @property
    def metrics(self):
        return [self.loss_tracker, self.ce_tracker, self.hw_tracker, self.ratio_tracker, self.accuracy_tracker]

    def compile(self, optimizer="sgd", loss=None, **kwargs):
        """Like `keras.Model.compile`; the loss defaults to cross entropy on logits."""
        loss = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        # Build both now, each on its own variables: a lazily built optimizer would differ in size from
        # the one `BackupAndRestore` builds on all trainable variables, and resuming would drop its state.
        self.optimizer.build(self.weight_variables)
        self.gate_optimizer.build(self.gate_variables)

    def hardware_loss(self):
        """`(loss, ratio)`: the hardware loss and the differentiable cost ratio.

        "hinge" is `max(ratio / target - 1, 0)`; "two_sided" is
        `|ratio / target - 1|`, which also pulls back up when the task gradient
        keeps closing channels below the target (seen on short runs). `target`
        is the variable `hw_target` (`target_ratio` unless a callback glides it).
        """
        ratio = self.cost_model.ratio(self.cost_metric, differentiable=True)
        excess = ratio / self.hw_target - 1.0
        return (ops.relu(excess) if self.hw_loss == "hinge" else ops.abs(excess)), ratio

    def adversarial_examples(self, x, y):
        """Runs the training attack on a batch (BN in training mode, as in Wong et al. 2020)."""

        def loss_of(x_in):
            logits = self.network(x_in, training=True)
            return ops.sum(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))

        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.attack_counter.value, tf.int64)])
        self.attack_counter.assign_add(1)
        return self._attack_fn(loss_of, x, seed)

    def pressure_scales(self):
        """Per-gate factors on the hardware-loss gradient, in the order of `gate_variables`.

        Returns:
            List of scalar tensors: `(mean / own) ** (1 - cost_sensitivity)`,
            where `own` is the marginal cost of the gate's group and `mean` the
            marginal cost averaged over all open channels; all 1.0 when
            `cost_sensitivity` is 1.
        """
        if self.cost_sensitivity == 1.0:
            return [ops.ones(()) for _ in self.gates]
        widths = {gid: ops.cast(ops.sum(layer.hard_mask()), "float32") for gid, layer in self.cost_model.gates.items()}
        marginal = self.cost_model.marginal_costs(self.cost_metric, widths)
        mean = sum(widths[gid] * marginal[gid] for gid in marginal) / sum(widths.values())
        exponent = 1.0 - self.cost_sensitivity
        return [
            ops.ones(()) if gid is None else ops.power(mean / ops.maximum(marginal[gid], 1e-12), exponent)
            for gid in self._gate_gids
        ]

    def importance_scales(self, closing):
        """Per-gate, per-channel factors on the hardware-loss gradient from relative filter norms.

        Args:
            closing: Scalar bool tensor, whether the hardware loss is closing
                channels (cost above its target) rather than reopening them.

        Returns:
            List, in the order of `gate_variables`, of `(width,)` tensors
            `rel ** -p` if `closing` else `rel ** p` (see the class
            docstring); 1.0 for a closed channel while closing (an inflated
            push on it would only swell the shared RMS) and for every channel
            of a group whose open filters have zero norm; scalar 1.0 where
            `importance_pressure` is 0 or a gate has no group.
        """
        if self.importance_pressure == 0.0:
            return [ops.ones(()) for _ in self.gates]
        norms = filter_l1_norm_tensors(self.network, self.cost_model)
        exponent = ops.where(closing, -self.importance_pressure, self.importance_pressure)
        scales = []
        for g, gid in zip(self.gates, self._gate_gids):
            if gid is None:
                scales.append(ops.ones(()))
                continue
            norm, open_mask = norms[gid], g.hard_mask()
            open_mean = ops.sum(open_mask * norm) / ops.maximum(ops.sum(open_mask), 1.0)
            relative = ops.clip(norm / ops.maximum(open_mean, 1e-12), 0.1, 10.0)
            scale = ops.where(ops.logical_and(closing, open_mask == 0.0), 1.0, ops.power(relative, exponent))
            scales.append(ops.where(open_mean > 0.0, scale, 1.0))
        return scales

    def centred_task_gradients(self, task_grads):
        """Removes each gate group's net task push over its open channels (see `center_task_gradient`).

        The straight-through gradient on logit `c` is `sigmoid'(l_c) * dL/dm_c`.
        The mean of `dL/dm` over the open channels is subtracted from each open
        channel's `dL/dm`, so those sum to zero; a group followed by a batch
        norm already sums to zero there (scale invariance) and is unchanged.
        Closed channels keep their gradient.

        Args:
            task_grads: List of gradients (or None) in the order of `gate_variables`.

        Returns:
            The list with every non-None gradient centred.
        """
        centred = []
        for grad, g in zip(task_grads, self.gates):
            if grad is None:
                centred.append(grad)
                continue
            soft = ops.sigmoid(ops.convert_to_tensor(g.logits))
            slope, open_mask = soft * (1.0 - soft), g.hard_mask()
            mask_grad = ops.where(slope > 0.0, grad / ops.maximum(slope, 1e-30), 0.0)  # dL/dm
            offset = ops.sum(open_mask * mask_grad) / ops.maximum(ops.sum(open_mask), 1.0)
            centred.append(grad - open_mask * slope * offset)
        return centred

    def _update_metrics(self, loss, ce, hw, ratio, y, logits):
        self.loss_tracker.update_state(loss)
        self.ce_tracker.update_state(ce)
        self.hw_tracker.update_state(hw)
        self.ratio_tracker.update_state(ratio)
        self.accuracy_tracker.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y = data[0], data[1]
        x_adv = self.adversarial_examples(x, y)
        weight_vars, gate_vars = self.weight_variables, self.gate_variables
        with tf.GradientTape() as tape:
            logits = self.network(x_adv, training=True)
            ce = self.compute_loss(x=x_adv, y=y, y_pred=logits)
        with tf.GradientTape() as hw_tape:  # the hardware loss depends on the gates only
            hw, ratio = self.hardware_loss()
            weighted_hw = self.hw_lambda * hw
        loss = ce + weighted_hw
        grads = tape.gradient(ce, weight_vars + gate_vars)
        hw_grads = hw_tape.gradient(weighted_hw, gate_vars)
        weight_grads = grads[: len(weight_vars)]
        if self.weight_decay:
            weight_grads = [
                None if g is None else g + self.weight_decay * ops.convert_to_tensor(v)
                for g, v in zip(weight_grads, weight_vars)
            ]
        self.optimizer.apply(weight_grads, weight_vars)
        task_grads = grads[len(weight_vars) :]
        if self.center_task_gradient:
            task_grads = self.centred_task_gradients(task_grads)
        scales = [
            cost * importance
            for cost, importance in zip(self.pressure_scales(), self.importance_scales(ratio > self.hw_target))
        ]
        # A gate frozen before tracing has no gradient: feed zeros (its learning rate is 0 anyway).
        gate_grads = [
            (ops.zeros_like(v) if task is None else task) + (0.0 if hw_g is None else scale * hw_g)
            for task, hw_g, scale, v in zip(task_grads, hw_grads, scales, gate_vars)
        ]
        # Gates move only under the hardware loss. Alone, the task gradient on a gate is that of a channel scale
        # (after BN it is gamma * dL/dgamma + beta * dL/dbeta), not an importance; in a dense warm-up it would drift
        # the logits for thousands of steps before pruning starts, and tune the RMS to a gradient it no longer sees.
        pruning = self.hw_lambda > 0.0
        scaled = scale_by_shared_rms(gate_grads, self.gate_grad_ms, active=pruning)
        gate_steps = [ops.cast(pruning, "float32") * g for g in scaled]
        self.gate_optimizer.apply(gate_steps, gate_vars)
        return self._update_metrics(loss, ce, hw, ratio, y, logits)

    def test_step(self, data):
        x, y = data[0], data[1]
        logits = self.network(x, training=False)
        ce = self.compute_loss(x=x, y=y, y_pred=logits, training=False)
        hw, ratio = self.hardware_loss()
        return self._update_metrics(ce + self.hw_lambda * hw, ce, hw, ratio, y, logits)

    def freeze_gates(self):
        """Stops gate training: gate learning rate 0, gates marked frozen (hard masks only)."""
        self.gate_optimizer.learning_rate.assign(0.0)
        for g in self.gates:
            g.frozen = True

    def gates_frozen(self):
        """Bool, whether `freeze_gates` has run (gate learning rate is 0)."""
        return float(ops.convert_to_numpy(self.gate_optimizer.learning_rate)) == 0.0

    def get_config(self):
        return {
            **super().get_config(),
            "network": keras.saving.serialize_keras_object(self.network),
            "attack": self.attack,
            "epsilon": self.epsilon,
            "step": self.step,
            "pgd_steps": self.pgd_steps,
            "noise": self.noise,
            "cost_metric": self.cost_metric,
            "target_ratio": self.target_ratio,
            "hw_lambda": self.initial_hw_lambda,
            "gate_learning_rate": self.gate_learning_rate,
            "hw_loss": self.hw_loss,
            "cost_sensitivity": self.cost_sensitivity,
            "importance_pressure": self.importance_pressure,
            "center_task_gradient": self.center_task_gradient,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)
