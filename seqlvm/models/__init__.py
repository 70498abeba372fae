"""Sequential latent-variable models sharing one protocol (see ``seqlvm.models.base``)."""

from seqlvm.models.base import ELBO, Forecast, Imputation, RolloutStep, SequenceModel
from seqlvm.models.gtmsm import GTMSM, GTMSMConfig
from seqlvm.models.kvae import KVAE, KVAEConfig
from seqlvm.models.lgssm import LGSSM, LGSSMConfig
from seqlvm.models.srnn import SRNN, SRNNConfig

__all__ = [
    "ELBO",
    "Forecast",
    "Imputation",
    "RolloutStep",
    "SequenceModel",
    "LGSSM",
    "LGSSMConfig",
    "KVAE",
    "KVAEConfig",
    "SRNN",
    "SRNNConfig",
    "GTMSM",
    "GTMSMConfig",
    "MODELS",
    "get_model_class",
]

# name -> model class, for the Trainer, checkpoints and the command line.
MODELS: dict[str, type[SequenceModel]] = {"lgssm": LGSSM, "kvae": KVAE, "srnn": SRNN, "gtmsm": GTMSM}


def get_model_class(name: str) -> type[SequenceModel]:
    """The model class registered under ``name`` (e.g. ``"lgssm"``)."""
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"model: unknown name {name!r}; expected one of {sorted(MODELS)}") from None
