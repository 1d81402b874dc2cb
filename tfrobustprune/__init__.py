"""tfrobustprune: small and robust image classifiers, trained once from scratch.

The pipeline: `gate(model)` puts channel gates on a functional Keras model;
`RobustPruneModel(...).fit(..., callbacks=[RobustPruneCallback(...)])` trains it
on adversarial examples with a hardware-cost loss; `strip(model)` returns the
smaller plain Keras model; `tflite_export` converts and verifies it.
"""

from tfrobustprune import attacks, budget, cost, data, groups, magnitude, models
from tfrobustprune.callback import RobustPruneCallback, lambda_schedule, target_schedule
from tfrobustprune.cost import CostModel, count_macs
from tfrobustprune.gates import ChannelGate
from tfrobustprune.gating import gate, gate_layers
from tfrobustprune.groups import ChannelGroup, analyze
from tfrobustprune.robust_model import RobustPruneModel
from tfrobustprune.strip import strip

__version__ = "0.1.0"

__all__ = [
    "ChannelGate",
    "ChannelGroup",
    "CostModel",
    "RobustPruneCallback",
    "RobustPruneModel",
    "analyze",
    "attacks",
    "budget",
    "cost",
    "count_macs",
    "data",
    "gate",
    "gate_layers",
    "groups",
    "lambda_schedule",
    "magnitude",
    "models",
    "strip",
    "target_schedule",
]
