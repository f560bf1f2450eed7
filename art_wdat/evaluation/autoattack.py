"""The report's AutoAttack row: the ``autoattack`` package behind ART's ``generate``.

It lives in :mod:`art_wdat.attacks.autoattack`, below both the evaluation and the trainer's held-out selection; this
module keeps the evaluation's import path.
"""

from art_wdat.attacks.autoattack import (
    AUTOATTACK_VERSIONS,
    CUSTOM_ATTACKS,
    PACKAGE_ITERATIONS,
    TARGET_CLASSES,
    AutoAttackVersion,
    PackageAutoAttack,
    autoattack_note,
    check_version,
    package_autoattack,
    set_iterations,
    target_classes,
)

__all__ = ["AUTOATTACK_VERSIONS", "CUSTOM_ATTACKS", "PACKAGE_ITERATIONS", "TARGET_CLASSES", "AutoAttackVersion",
           "PackageAutoAttack", "autoattack_note", "check_version", "package_autoattack", "set_iterations",
           "target_classes"]
