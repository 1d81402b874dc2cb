import keras
import pytest
from conftest import load_benchmark

from tfrobustprune import data, models


@pytest.fixture(scope="module")
def throughput():
    return load_benchmark("fit_throughput")


def test_images_per_second_times_the_steps_after_the_first(throughput, sample, monkeypatch):
    model = models.cifar_resnet(depth=8, width=4)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dataset = data.train_dataset(sample.x_train[:64], sample.y_train[:64], 16).repeat()
    # A fake clock: one second per step end, whatever `fit` does before the first or after the last.
    ticks = iter(range(100))
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: float(next(ticks)))
    assert throughput.images_per_second(model, dataset, 4, 16) == pytest.approx(16.0)  # 3 steps x 16 in 3 s
    with pytest.raises(ValueError, match="Received: 1"):
        throughput.images_per_second(model, dataset, 1, 16)
