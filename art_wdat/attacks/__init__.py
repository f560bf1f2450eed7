"""The ART-facing attacks: :class:`WassersteinDistributionalAttack` and the bridge to ART's estimators."""

from art_wdat.attacks.spec import EPS_STEP_RATIO, METHODS, ThreatSpec, parse_norm
from art_wdat.attacks.wasserstein import AttackResult, WassersteinDistributionalAttack

__all__ = ["EPS_STEP_RATIO", "METHODS", "AttackResult", "ThreatSpec", "WassersteinDistributionalAttack", "parse_norm"]
