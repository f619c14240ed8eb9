"""The Forget wizard: choose a model, state the fact, pick what to keep, review anti-samples, train, check, export.

One module per step (model, fact, keep, samples, training, results, export), their base class in step.py, and the
wizard that strings them together in wizard.py.
"""

from .wizard import STEP_CLASSES, STEP_KEYS, ForgetWizard, WizardState, saved_step_index

__all__ = ["STEP_CLASSES", "STEP_KEYS", "ForgetWizard", "WizardState", "saved_step_index"]
