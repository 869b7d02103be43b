"""Using a trained model: inference on a Learner (`inference`: get_preds, predict, validate), one-file exports
(`export`) and loading them anywhere without the training code (`predictor`: load_learner, Predictor)."""
from .export import ExportError, export_format, export_learner
from .inference import (
    Prediction,
    Preds,
    activation_kind,
    confusion_matrix,
    get_preds,
    metric_inputs,
    predict,
    validate,
)
from .predictor import FilePreds, Predictor, load_learner

__all__ = ["ExportError", "export_format", "export_learner", "Prediction", "Preds", "confusion_matrix", "get_preds",
           "predict", "validate", "metric_inputs", "activation_kind", "FilePreds", "Predictor", "load_learner"]
