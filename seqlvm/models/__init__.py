"""Sequential latent-variable models sharing one protocol (see ``seqlvm.models.base``)."""

from seqlvm.models.base import ELBO, Forecast, Imputation, SequenceModel

__all__ = ["ELBO", "Forecast", "Imputation", "SequenceModel", "MODELS", "get_model_class"]

# name -> model class; each model file registers itself here when its issue lands.
MODELS: dict[str, type[SequenceModel]] = {}


def get_model_class(name: str) -> type[SequenceModel]:
    """The model class registered under ``name`` (e.g. ``"lgssm"``)."""
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"model: unknown name {name!r}; expected one of {sorted(MODELS)}") from None
