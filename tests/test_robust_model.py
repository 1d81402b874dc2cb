import keras
import numpy as np
import pytest
from keras import ops

import tfrobustprune
from tfrobustprune import (
    RobustPruneCallback,
    RobustPruneModel,
    attacks,
    data,
    lambda_schedule,
    magnitude,
    target_schedule,
)


def _compiled(network, **kwargs):
    model = RobustPruneModel(network, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return model


def test_train_steps_lower_the_loss_on_real_images(sample):
    keras.utils.set_random_seed(0)
    network = tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=8))
    model = _compiled(network, attack="fgsm_rs", target_ratio=1.0)
    x = sample.x_train[:256].astype("float32") / 255.0
    y = sample.y_train[:256]
    history = model.fit(x, y, batch_size=64, epochs=6, verbose=0, shuffle=False)
    loss = history.history["loss"]
    assert loss[-1] < loss[0] - 0.1
    assert set(history.history) >= {"loss", "ce", "hw_loss", "cost_ratio", "accuracy"}


def test_hardware_loss_drives_the_cost_toward_the_target(sample):
    keras.utils.set_random_seed(0)
    network = tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=8), init_logit=1.0)
    model = _compiled(network, attack="none", target_ratio=0.5, hw_lambda=2.0, gate_learning_rate=0.1)
    ds = data.train_dataset(sample.x_train[:512], sample.y_train[:512], 64)
    history = model.fit(ds, epochs=4, verbose=0)
    assert history.history["cost_ratio"][-1] < 0.8
    assert model.cost_model.ratio("macs") < 0.8


def test_weights_and_gates_use_separate_optimizers(tiny_gated_model):
    model = _compiled(tiny_gated_model)
    gate_ids = {id(v) for v in model.gate_variables}
    assert gate_ids and not gate_ids & {id(v) for v in model.weight_variables}
    assert len(model.gate_variables) + len(model.weight_variables) == len(tiny_gated_model.trainable_variables)


def test_freeze_stops_gate_updates(sample, tiny_gated_model):
    model = _compiled(tiny_gated_model, hw_lambda=5.0, target_ratio=0.2)
    model.freeze_gates()
    before = [np.array(v) for v in model.gate_variables]
    model.fit(sample.x_train[:64].astype("float32") / 255, sample.y_train[:64], batch_size=32, epochs=1, verbose=0)
    for old, new in zip(before, model.gate_variables):
        np.testing.assert_array_equal(old, np.array(new))
    assert model.gates_frozen()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(attack="cw"), r"Received: attack='cw'"),
        (dict(target_ratio=1.5), r"Received: target_ratio=1.5"),
        (dict(cost_metric="flops"), r"Received: cost_metric='flops'"),
        (dict(epsilon=-0.1), r"Received: epsilon=-0.1"),
        (dict(hw_loss="l2"), r"Received: hw_loss='l2'"),
        (dict(weight_decay=-1e-4), r"Received: weight_decay=-0.0001"),
        (dict(cost_sensitivity=1.5), r"Received: cost_sensitivity=1.5"),
        (dict(importance_pressure=-1.0), r"Received: importance_pressure=-1.0"),
        (dict(importance_pressure=float("inf")), r"Received: importance_pressure=inf"),
        (dict(center_task_gradient="no"), r"Received: center_task_gradient='no'"),
    ],
)
def test_bad_arguments_are_rejected(tiny_gated_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        RobustPruneModel(tiny_gated_model, **kwargs)


def test_coupled_weight_decay_goes_through_momentum_like_torch_sgd(sample, tiny_gated_model):
    # With a task loss of zero only the decay moves the weights. Coupled (torch.optim.SGD): the decay enters the
    # momentum buffer, m1 = -lr wd w0, w1 = w0 + m1, w2 = w1 + mu m1 - lr wd w1. Keras' decoupled decay would give
    # w0 (1 - lr wd)^2 instead. The gates never move.
    lr, mu, wd = 0.1, 0.9, 0.05
    x = sample.x_train[:32].astype("float32") / 255.0
    y = sample.y_train[:32]
    model = RobustPruneModel(tiny_gated_model, attack="none", target_ratio=1.0, hw_lambda=0.0, weight_decay=wd)
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=mu), loss=lambda y_true, y_pred: 0.0 * ops.sum(y_pred))
    w0 = [np.array(v) for v in model.weight_variables]
    gates = [np.array(v) for v in model.gate_variables]
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    for v, w in zip(model.weight_variables, w0):
        m1 = -lr * wd * w
        w1 = w + m1
        np.testing.assert_allclose(np.array(v), w1 + mu * m1 - lr * wd * w1, rtol=1e-5, atol=1e-7)
        if np.abs(w).max() > 1e-3:  # differs from the decoupled rule
            assert not np.allclose(np.array(v), w * (1 - lr * wd) ** 2, rtol=1e-5, atol=1e-7)
    for v, g in zip(model.gate_variables, gates):
        np.testing.assert_array_equal(np.array(v), g)
    assert RobustPruneModel.from_config(model.get_config()).weight_decay == wd


def test_cost_sensitivity_interpolates_between_the_mean_and_the_own_cost(tiny_gated_model):
    charged = {}
    for sensitivity in (0.0, 0.5):
        model = RobustPruneModel(tiny_gated_model, cost_metric="params", cost_sensitivity=sensitivity)
        marginal = model.cost_model.marginal_costs("params")
        gid_of = {id(layer): gid for gid, layer in model.cost_model.gates.items()}
        own = np.array([float(marginal[gid_of[id(g)]]) for g in model.gates])
        charged[sensitivity] = own * np.array([float(s) for s in model.pressure_scales()])
    assert np.ptp(own) > 0.5 * own.mean()  # the groups differ in cost, so the checks below can fail
    np.testing.assert_allclose(charged[0.0], charged[0.0][0], rtol=1e-5)  # everyone pays the same
    # Half way: the costlier channel still pays more, but the spread is the geometric mean of none and all.
    order = np.argsort(own)
    assert np.all(np.diff(charged[0.5][order]) >= -1e-6)
    np.testing.assert_allclose(charged[0.5] ** 2, charged[0.0] * own, rtol=1e-4)


def test_without_cost_sensitivity_every_gate_is_pushed_equally(sample):
    # A hardware loss far above the task loss: the gate steps show the pressure each group feels.
    x, y = sample.x_train[:64].astype("float32") / 255.0, sample.y_train[:64]
    steps = {}
    for sensitivity in (0.0, 1.0):
        network = tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=8), init_logit=1.0)
        model = _compiled(
            network, attack="none", cost_metric="params", target_ratio=0.3, hw_lambda=1e4, cost_sensitivity=sensitivity
        )
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
        steps[sensitivity] = np.array([1.0 - float(ops.mean(g.logits)) for g in model.gates])
        marginal = model.cost_model.marginal_costs("params")
        gid_of = {id(layer): gid for gid, layer in model.cost_model.gates.items()}
        own = np.array([float(marginal[gid_of[id(g)]]) for g in model.gates])
    assert np.all(steps[0.0] > 0) and np.ptp(steps[0.0]) < 0.01 * steps[0.0].mean()
    np.testing.assert_allclose(steps[1.0] / steps[1.0].max(), own / own.max(), rtol=0.01)


def _relative_filter_norms(model):
    """Per gate: L1 norm of each channel's filters over the mean of its group's open channels."""
    norms = magnitude.filter_l1_norms(model.network, model.cost_model)
    gid_of = {id(layer): gid for gid, layer in model.cost_model.gates.items()}
    relative = []
    for g in model.gates:
        norm, open_mask = norms[gid_of[id(g)]], np.array(g.hard_mask())
        relative.append(np.clip(norm / (norm * open_mask).sum() * open_mask.sum(), 0.1, 10.0))
    return relative


@pytest.mark.parametrize("closing", [True, False])
def test_importance_pressure_pushes_weak_filters_hardest(sample, closing):
    # A hardware loss far above the task loss, charged at the mean cost (s = 0), weights held still (lr 0):
    # each channel's gate step is the pressure it feels. Closing, it is `rel ** -1` (1 on closed channels);
    # reopening (target 1), `rel ** +1`, so the strongest closed filters come back first.
    x, y = sample.x_train[:64].astype("float32") / 255.0, sample.y_train[:64]
    network = tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=8), init_logit=1.0)
    rng = np.random.default_rng(0)
    for layer in network.layers:  # filters of very different norms (a fresh init's are all about equal)
        if isinstance(layer, keras.layers.Conv2D):
            layer.kernel.assign(layer.kernel * rng.uniform(0.05, 3.0, layer.kernel.shape[-1]).astype("float32"))
    model = RobustPruneModel(
        network,
        attack="none",
        cost_metric="params",
        target_ratio=0.3 if closing else 1.0,
        hw_lambda=1e4,
        cost_sensitivity=0.0,
        importance_pressure=1.0,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    for g in model.gates:  # a quarter (closing) or half (reopening) of every group closed
        shut = g.channels // (4 if closing else 2)
        g.logits.assign(np.r_[np.full(shut, -1.0), np.ones(g.channels - shut)].astype("float32"))
    before = [np.array(g.logits) for g in model.gates]
    relative = _relative_filter_norms(model)
    is_open = np.concatenate([np.array(g.hard_mask()) > 0 for g in model.gates])
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    steps = np.concatenate([b - np.array(g.logits) for b, g in zip(before, model.gates)])
    expected = np.concatenate(relative) ** (-1.0 if closing else 1.0)
    if closing:  # a closed channel is not pushed harder for its (shrinking) filters
        expected = np.where(is_open, expected, 1.0)
    assert np.ptp(expected) > 1.0  # filters differ in norm, so the check below can fail
    if closing:
        np.testing.assert_allclose(steps / steps.max(), expected / expected.max(), rtol=0.01)
    else:  # reopening steps are negative; the sigmoid slope is the same at logits -1 and 1
        np.testing.assert_allclose(steps / steps.min(), expected / expected.max(), rtol=0.01)


@pytest.mark.parametrize("center", [False, True])
def test_centred_task_gradient_has_no_net_push_on_any_gate_group(sample, center):
    # A negligible hardware loss (but > 0, so the gates move): the steps are the task gradient's. The last residual
    # stream, read by the classifier without a batch norm, gets a net push; centred, every group sums to zero.
    x, y = sample.x_train[:128].astype("float32") / 255.0, sample.y_train[:128]
    keras.utils.set_random_seed(0)
    network = tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=8), init_logit=1.0)
    model = RobustPruneModel(network, attack="none", hw_lambda=1e-9, center_task_gradient=center)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    net = [abs(float(ops.sum(1.0 - g.logits))) / float(ops.sum(ops.abs(1.0 - g.logits))) for g in model.gates]
    if center:
        assert max(net) < 1e-3
    else:
        assert max(net) > 0.05


def test_centring_removes_the_mean_mask_gradient_of_open_channels_only(tiny_gated_model):
    # Unequal logits and closed channels: the open channels' dL/dm (logit gradient over the sigmoid slope) lose
    # their mean, a group whose dL/dm already sums to zero (what a batch norm gives) is unchanged, closed
    # channels keep their gradient.
    model = RobustPruneModel(tiny_gated_model, center_task_gradient=True)
    rng = np.random.default_rng(0)
    grads, mask_grads = [], []
    for i, g in enumerate(model.gates):
        logits = rng.normal(0.0, 2.0, g.channels).astype("float32")
        logits[:2] = [-3.0, 4.0]  # at least one closed and one open channel
        g.logits.assign(logits)
        slope = 1 / (1 + np.exp(-logits)) * (1 - 1 / (1 + np.exp(-logits)))
        mask_grad = rng.normal(0.0, 1.0, g.channels)
        open_ = np.array(g.hard_mask()) > 0
        # Every other group sums to zero over its open channels, the rest to a net push of 1 per channel.
        mask_grad[open_] += (0.0 if i % 2 else 1.0) - mask_grad[open_].mean()
        grads.append(ops.convert_to_tensor((slope * mask_grad).astype("float32")))
        mask_grads.append((mask_grad, slope, open_, bool(i % 2)))
    for centred, (mask_grad, slope, open_, zero_sum) in zip(model.centred_task_gradients(grads), mask_grads):
        centred = np.array(centred)
        np.testing.assert_allclose(centred[~open_], (slope * mask_grad)[~open_], rtol=1e-5)
        expected = slope * (mask_grad - mask_grad[open_].mean())
        np.testing.assert_allclose(centred[open_], expected[open_], rtol=1e-4, atol=1e-7)
        if zero_sum:
            np.testing.assert_allclose(centred, slope * mask_grad, rtol=1e-4, atol=1e-6)
        else:
            assert not np.allclose(centred, slope * mask_grad, rtol=0.1)  # centring changed this group


def test_gates_hold_still_without_the_hardware_loss(sample):
    x, y = sample.x_train[:64].astype("float32") / 255.0, sample.y_train[:64]
    moved = {}
    for hw_lambda in (0.0, 1.0):
        network = tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=8), init_logit=1.0)
        model = _compiled(network, attack="none", target_ratio=0.5, hw_lambda=hw_lambda)
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
        moved[hw_lambda] = max(float(ops.max(ops.abs(g.logits - 1.0))) for g in model.gates)
        if not hw_lambda:  # nor does the running RMS learn a gradient the gates will not follow
            assert float(model.gate_grad_ms) == 0.0
    assert moved[0.0] == 0.0 and moved[1.0] > 0.005


def test_a_freeze_before_the_hardware_loss_closes_by_l1_norm_not_by_index(sample):
    from tfrobustprune import magnitude

    network = tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=8), init_logit=1.0)
    model = _compiled(network, attack="none", cost_metric="params", target_ratio=0.6)
    x, y = sample.x_train[:64].astype("float32") / 255.0, sample.y_train[:64]
    callback = RobustPruneCallback(lambda_max=1.0, warmup_epochs=5, freeze_epoch=5, verbose=0)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[callback])  # ends before the loss ever ran
    assert model.gates_frozen() and model.cost_model.ratio("params") <= 0.6
    norms = magnitude.filter_l1_norms(network, model.cost_model)
    shrunk = 0
    for gid, gate in model.cost_model.gates.items():
        is_open = np.asarray(gate.hard_mask()).astype(bool)
        if not is_open.all():
            shrunk += 1
            assert norms[gid][~is_open].max() < norms[gid][is_open].min()  # by index, the first channels would go
    assert shrunk >= 2
    assert not magnitude.rank_untrained_gates_by_norm(network)  # ranked gates are left alone


def test_ungated_network_is_rejected(tiny_model):
    with pytest.raises(ValueError, match="no ChannelGate"):
        RobustPruneModel(tiny_model)


def test_lambda_schedule():
    assert [lambda_schedule(e, 2.0, warmup_epochs=1, ramp_epochs=2) for e in range(5)] == [0.0, 1.0, 2.0, 2.0, 2.0]
    assert lambda_schedule(0, 3.0) == 3.0


def test_target_schedule_glides_from_one_to_the_target():
    assert target_schedule(0, 0.3) == target_schedule(7, 0.3) == 0.3
    glide = [target_schedule(e, 0.5, start_epoch=1, glide_epochs=4) for e in range(7)]
    assert glide[0] == 1.0  # warm-up: no pruning pressure
    assert glide[1] == pytest.approx(0.5 + 0.5 * 0.75**3)
    assert glide[4:] == [0.5, 0.5, 0.5]
    assert all(a > b for a, b in zip(glide[:5], glide[1:5]))  # strictly falling until reached


def test_callback_glides_the_loss_target_and_the_gates_close_more_slowly(sample):
    def first_epochs(glide):
        keras.utils.set_random_seed(0)
        network = tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=8))
        model = _compiled(network, attack="none", target_ratio=0.3, cost_metric="params", gate_learning_rate=0.3)
        return model.fit(
            sample.x_train[:256].astype("float32") / 255,
            sample.y_train[:256],
            batch_size=32,
            epochs=3,
            verbose=0,
            callbacks=[RobustPruneCallback(lambda_max=1.0, target_glide_epochs=glide)],
        ).history

    glided, direct = first_epochs(glide=3), first_epochs(glide=0)
    assert glided["hw_target"] == pytest.approx([target_schedule(e, 0.3, 0, 3) for e in range(3)])
    assert direct["hw_target"] == pytest.approx([0.3] * 3)
    assert glided["hard_cost_ratio"][0] > direct["hard_cost_ratio"][0] + 0.05
    assert glided["hard_cost_ratio"][-1] < glided["hard_cost_ratio"][0]


def test_callback_freezes_at_the_epoch_and_meets_the_target(sample):
    keras.utils.set_random_seed(0)
    network = tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=8))
    model = _compiled(network, attack="none", target_ratio=0.4, cost_metric="params")
    callback = RobustPruneCallback(lambda_max=1.0, freeze_epoch=1)
    history = model.fit(
        sample.x_train[:128].astype("float32") / 255,
        sample.y_train[:128],
        batch_size=64,
        epochs=2,
        verbose=0,
        callbacks=[callback],
    )
    assert history.history["gates_frozen"] == [0.0, 1.0]
    ratio = model.cost_model.ratio("params")
    assert 0.38 <= ratio <= 0.4
    assert history.history["hard_cost_ratio"][-1] == pytest.approx(ratio)
    assert any(k.startswith("width/stream:") for k in history.history)


def test_callback_restores_best_weights_on_catastrophic_overfitting(sample, monkeypatch):
    keras.utils.set_random_seed(0)
    network = tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=4))
    model = _compiled(network, attack="fgsm_rs")
    probe = (sample.x_val[:16], sample.y_val[:16])
    callback = RobustPruneCallback(probe_data=probe, max_drop=0.2)
    accuracies = iter([0.40, 0.45, 0.10, 0.50])
    snapshots = []
    monkeypatch.setattr(callback, "_probe_pgd_accuracy", lambda: next(accuracies))

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append([np.array(w) for w in self.model.get_weights()])

    history = model.fit(
        sample.x_train[:64].astype("float32") / 255,
        sample.y_train[:64],
        batch_size=32,
        epochs=4,
        verbose=0,
        callbacks=[callback, Snapshot()],
    )
    assert len(history.epoch) == 3  # stopped at the collapse
    assert callback.collapsed_at == 2
    for restored, best in zip(model.get_weights(), snapshots[1]):
        np.testing.assert_array_equal(restored, best)


def test_guard_falls_back_to_pgd_after_a_relative_collapse_and_remembers_it(sample, monkeypatch, tmp_path):
    keras.utils.set_random_seed(0)
    network = tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=4))
    model = _compiled(network, attack="n_fgsm")
    probe = (sample.x_val[:16], sample.y_val[:16])
    callback = RobustPruneCallback(probe_data=probe, fallback_steps=2, state_dir=str(tmp_path))
    accuracies = iter([0.20, 0.05, 0.30])  # 0.05 is not 0.2 below the best, but less than half of it
    snapshots = []
    monkeypatch.setattr(callback, "_probe_pgd_accuracy", lambda: next(accuracies))

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append([np.array(w) for w in self.model.get_weights()])

    pgd_traces = []
    real_pgd = attacks.pgd
    monkeypatch.setattr(attacks, "pgd", lambda *a, **k: pgd_traces.append(k) or real_pgd(*a, **k))
    x, y = sample.x_train[:64].astype("float32") / 255, sample.y_train[:64]
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[callback, Snapshot()])
    assert len(history.epoch) == 3 and callback.collapsed_at is None and callback.fallback_at == 1
    assert pgd_traces  # the train step was retraced with the PGD attack
    assert (model.attack, model.pgd_steps, model.step) == ("pgd", 2, pytest.approx(model.epsilon / 2))
    assert history.history["catastrophic_overfitting"] == [0.0, 1.0, 0.0]  # every epoch: a CSV column from the first
    for restored, best in zip(snapshots[1], snapshots[0]):  # epoch 2 ended on the weights of epoch 1
        np.testing.assert_array_equal(restored, best)

    resumed = _compiled(tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=4)), attack="n_fgsm")
    again = RobustPruneCallback(probe_data=probe, fallback_steps=2, state_dir=str(tmp_path))
    monkeypatch.setattr(again, "_probe_pgd_accuracy", lambda: 0.3)
    resumed.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[again])
    assert resumed.attack == "pgd" and again.fallback_at == 1


class _TrainingAccuracy(keras.callbacks.Callback):
    """Placed before the guard: sets the epoch's training accuracy the guard reads (a tiny model's is ~0.1)."""

    def __init__(self, values):
        super().__init__()
        self.values = iter(values)

    def on_epoch_end(self, epoch, logs=None):
        logs["accuracy"] = next(self.values)


def _guarded_fit(sample, monkeypatch, probed, trained, attack="n_fgsm", **guard_kwargs):
    """Fits a tiny gated ResNet with N-FGSM, probe accuracies `probed` and training accuracies `trained`.

    Returns:
        `(model, callback, history, initial network weights, network weights at the end of each epoch)`.
    """
    keras.utils.set_random_seed(0)
    model = _compiled(tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=4)), attack=attack)
    callback = RobustPruneCallback(probe_data=(sample.x_val[:16], sample.y_val[:16]), **guard_kwargs)
    accuracies = iter(probed)
    monkeypatch.setattr(callback, "_probe_pgd_accuracy", lambda: next(accuracies))
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append([np.array(w) for w in self.model.network.get_weights()])

    x, y = sample.x_train[:64].astype("float32") / 255, sample.y_train[:64]
    initial = [np.array(w) for w in model.network.get_weights()]
    callbacks = [_TrainingAccuracy(trained), callback, Snapshot()]
    history = model.fit(x, y, batch_size=32, epochs=len(probed), verbose=0, callbacks=callbacks)
    return model, callback, history, initial, snapshots


def test_guard_catches_a_collapse_in_the_first_epoch_by_the_attack_gap(sample, monkeypatch):
    # Epoch 1 fits its single-step attack (training accuracy 0.5) while PGD finds nothing (0.0): no earlier epoch
    # to fall from, but 0.5 above the probe. The weights from before the epoch come back and PGD-2 takes over;
    # then gaps of 0.05 are healthy (a second collapse would stop the fit).
    model, callback, history, initial, snapshots = _guarded_fit(
        sample, monkeypatch, probed=[0.0, 0.3, 0.3], trained=[0.5, 0.35, 0.35], fallback_steps=2
    )
    assert len(history.epoch) == 3 and callback.fallback_at == 0 and callback.collapsed_at is None
    assert (model.attack, model.pgd_steps) == ("pgd", 2)
    assert history.history["probe_attack_gap"] == pytest.approx([0.5, 0.05, 0.05])
    for restored, before in zip(snapshots[0], initial):  # epoch 1 ended on the weights it started from
        np.testing.assert_array_equal(restored, before)
    assert not all(np.array_equal(a, b) for a, b in zip(snapshots[1], initial))  # epoch 2 trained on


def test_guard_without_fallback_stops_a_first_epoch_collapse_on_the_starting_weights(sample, monkeypatch):
    model, callback, history, initial, _ = _guarded_fit(sample, monkeypatch, probed=[0.02, 0.3], trained=[0.4, 0.4])
    assert len(history.epoch) == 1 and callback.collapsed_at == 0
    for restored, before in zip(model.network.get_weights(), initial):
        np.testing.assert_array_equal(restored, before)


def test_guard_attack_gap_can_be_turned_off_and_ignores_natural_training(sample, monkeypatch):
    for kwargs in (dict(max_attack_gap=1.0), dict(attack="none")):  # natural training: no PGD robustness expected
        _, callback, history, _, _ = _guarded_fit(sample, monkeypatch, probed=[0.0, 0.0], trained=[0.5, 0.5], **kwargs)
        assert len(history.epoch) == 2 and callback.collapsed_at is None and callback.fallback_at is None
    for name in ("max_drop", "max_relative_drop", "max_attack_gap"):
        for bad in (0.0, 1.5):
            with pytest.raises(ValueError, match=f"Received: {name}={bad}"):
                RobustPruneCallback(**{name: bad})


class _EpochAttacks(keras.callbacks.Callback):
    """Placed after the guard: records the training attack each epoch's first batch trains with."""

    def __init__(self):
        super().__init__()
        self.attacks = []

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.attacks.append((self.model.attack, self.model.pgd_steps if self.model.attack == "pgd" else None))


@pytest.mark.parametrize("epochs", [3, 1])
def test_pgd_warmup_trains_the_first_epochs_with_pgd_then_the_own_attack(sample, monkeypatch, epochs):
    keras.utils.set_random_seed(0)
    network = tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=4))
    model = _compiled(network, attack="n_fgsm", noise=4 / 255)
    pgd_traces = []
    real_pgd = attacks.pgd
    monkeypatch.setattr(attacks, "pgd", lambda *a, **k: pgd_traces.append(k) or real_pgd(*a, **k))
    seen = _EpochAttacks()
    callback = RobustPruneCallback(fallback_steps=2, pgd_warmup_epochs=2, verbose=0)
    x, y = sample.x_train[:64].astype("float32") / 255, sample.y_train[:64]
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[callback, seen])
    assert seen.attacks == [("pgd", 2), ("pgd", 2), ("n_fgsm", None)][:epochs]
    assert pgd_traces  # the step was traced with PGD, not only relabelled
    assert model.attack == "n_fgsm" and callback.fallback_at is None  # a fit ending inside the warm-up too
    assert model.noise == pytest.approx(4 / 255)  # the own attack comes back with its noise


def test_pgd_warmup_leaves_pgd_and_natural_training_alone_and_checks_its_arguments(sample):
    x, y = sample.x_train[:32].astype("float32") / 255, sample.y_train[:32]
    for attack, pgd_steps in (("pgd", 3), ("none", 10)):
        model = _compiled(
            tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=4)), attack=attack, pgd_steps=pgd_steps
        )
        seen = _EpochAttacks()
        callback = RobustPruneCallback(fallback_steps=2, pgd_warmup_epochs=1, verbose=0)
        model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback, seen])
        assert seen.attacks == [(attack, pgd_steps if attack == "pgd" else None)] * 2
    with pytest.raises(ValueError, match="Received: pgd_warmup_epochs=3, fallback_steps=0"):
        RobustPruneCallback(pgd_warmup_epochs=3)
    with pytest.raises(ValueError, match="Received: pgd_warmup_epochs=-1"):
        RobustPruneCallback(fallback_steps=2, pgd_warmup_epochs=-1)


def test_seed_fallback_starts_a_new_fit_in_pgd_and_keeps_an_existing_state(sample, monkeypatch, tmp_path):
    state_dir = str(tmp_path / "continued")
    assert RobustPruneCallback.seed_fallback(state_dir, 4)
    assert not RobustPruneCallback.seed_fallback(state_dir, 7)  # a resumed run's state is not overwritten
    for bad in (-1, 2.5, None, True):
        with pytest.raises(ValueError, match=f"Received: fallback_at={bad!r}"):
            RobustPruneCallback.seed_fallback(str(tmp_path / "other"), bad)
    with pytest.raises(ValueError, match="Received: state_dir=None"):
        RobustPruneCallback.seed_fallback(None, 1)

    keras.utils.set_random_seed(0)
    model = _compiled(tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=4)), attack="n_fgsm")
    callback = RobustPruneCallback(
        probe_data=(sample.x_val[:16], sample.y_val[:16]), fallback_steps=2, state_dir=state_dir
    )
    monkeypatch.setattr(callback, "_probe_pgd_accuracy", lambda: 0.3)
    x, y = sample.x_train[:32].astype("float32") / 255, sample.y_train[:32]
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[callback])
    assert (model.attack, model.pgd_steps, callback.fallback_at) == ("pgd", 2, 4)

    without_fallback = RobustPruneCallback(probe_data=(sample.x_val[:16], sample.y_val[:16]), state_dir=state_dir)
    with pytest.raises(ValueError, match="fallback_steps"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[without_fallback])


def test_robust_prune_model_config_round_trip(tiny_gated_model):
    model = RobustPruneModel(
        tiny_gated_model, attack="n_fgsm", target_ratio=0.3, cost_metric="params", cost_sensitivity=0.25
    )
    clone = RobustPruneModel.from_config(model.get_config())
    assert (clone.attack, clone.target_ratio, clone.cost_metric) == ("n_fgsm", 0.3, "params")
    assert clone.cost_sensitivity == 0.25
    assert (clone.importance_pressure, clone.center_task_gradient) == (0.0, False)
    other = RobustPruneModel.from_config(
        RobustPruneModel(tiny_gated_model, importance_pressure=0.5, center_task_gradient=True).get_config()
    )
    assert (other.importance_pressure, other.center_task_gradient) == (0.5, True)
    assert (clone.noise, other.noise) == (None, None)
    noisy = RobustPruneModel.from_config(
        RobustPruneModel(tiny_gated_model, attack="n_fgsm", noise=4 / 255).get_config()
    )
    assert noisy.noise == pytest.approx(4 / 255)


def test_set_training_attack_keeps_the_old_attack_when_the_new_one_is_refused(tiny_gated_model):
    model = RobustPruneModel(tiny_gated_model, attack="n_fgsm", noise=4 / 255)
    with pytest.raises(ValueError, match=r"N-FGSM's alone.*Received: attack='pgd'"):
        model.set_training_attack("pgd", step=2 / 255, pgd_steps=2, noise=4 / 255)
    assert (model.attack, model.step, model.pgd_steps, model.noise) == ("n_fgsm", None, 10, pytest.approx(4 / 255))
    model.set_training_attack("pgd", step=4 / 255, pgd_steps=2)
    assert (model.attack, model.pgd_steps, model.noise) == ("pgd", 2, None)
