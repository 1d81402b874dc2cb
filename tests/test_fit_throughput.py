import keras
import pytest
from helpers import load_benchmark

from tfrobustprune import data, models


@pytest.fixture(scope="module")
def throughput():
    return load_benchmark("fit_throughput")


def test_images_per_second_times_the_steps_after_the_first(throughput, sample):
    model = models.cifar_resnet(depth=8, width=4)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dataset = data.train_dataset(sample.x_train[:64], sample.y_train[:64], 16).repeat()
    # A fake clock: one second per step end, whatever `fit` does before the first or after the last.
    ticks = iter(range(100))
    assert throughput.images_per_second(model, dataset, 4, 16, clock=lambda: float(next(ticks))) == pytest.approx(16.0)
    # With two steps per call of the train function, the 2 s between the ends of calls 1 and 3 hold 4 steps.
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=2
    )
    ticks = iter(range(100))
    assert throughput.images_per_second(model, dataset, 6, 16, clock=lambda: float(next(ticks))) == pytest.approx(
        4 * 16 / 2
    )
    with pytest.raises(ValueError, match="Received: steps=1"):
        throughput.images_per_second(model, dataset, 1, 16)
    finite = data.train_dataset(sample.x_train[:16], sample.y_train[:16], 16)  # one batch, not repeated
    with pytest.raises(ValueError, match="is `dataset` repeated"):
        throughput.images_per_second(model, finite, 4, 16)


def test_cpu_model_reads_the_model_name_and_falls_back_without_proc(throughput, monkeypatch):
    real_open = open
    cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx512f\n"

    def fake_open(path, *args, **kwargs):
        if path == "/proc/cpuinfo":
            import io

            return io.StringIO(cpuinfo)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    assert throughput.cpu_model() == "AMD EPYC 9B14"

    def no_proc(path, *args, **kwargs):
        raise FileNotFoundError(path)

    monkeypatch.setattr("builtins.open", no_proc)
    monkeypatch.setattr(throughput.platform, "processor", lambda: "")
    assert throughput.cpu_model() == "unknown"
    assert throughput.machine()["cpu_model"] == "unknown"
