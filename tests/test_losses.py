"""The margin losses: defined for 2 classes, equal to DLR's numerator, zero on inputs already lost."""

import pytest
import torch

from art_wdat.core.losses import dlr, margin, redlr, remargin, resolve_loss


def test_margin_is_best_other_logit_minus_own() -> None:
    z = torch.tensor([[2.0, 0.5], [0.1, 0.7], [3.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    assert torch.allclose(margin(z, y), torch.tensor([-1.5, 0.6, 2.0]))
    assert torch.allclose(remargin(z, y), torch.tensor([-1.5, 0.0, 0.0]))


def test_remargin_has_the_sign_pattern_of_redlr() -> None:
    torch.manual_seed(0)
    z, y = torch.randn(64, 5), torch.randint(0, 5, (64,))
    # DLR is the margin divided by a positive spread: the same sign, the same zeros.
    assert torch.equal(margin(z, y).sign(), dlr(z, y).sign())
    assert torch.equal(remargin(z, y) == 0, redlr(z, y) == 0)


def test_remargin_gives_no_gradient_on_lost_inputs() -> None:
    z = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    remargin(z, torch.tensor([0, 0])).sum().backward()
    assert z.grad is not None
    assert torch.equal(z.grad[0], torch.zeros(2))
    assert torch.equal(z.grad[1], torch.tensor([-1.0, 1.0]))


@pytest.mark.parametrize("name", ["margin", "remargin", "ReMargin"])
def test_margin_losses_resolve_by_name(name: str) -> None:
    assert resolve_loss(name) in (margin, remargin)


def test_the_attack_on_a_binary_model_uses_the_two_class_margin_by_default() -> None:
    """DLR needs a third class: on 2 classes the default "redlr" is ReMargin, which flips inputs as ReDLR does."""
    import numpy as np

    from art_wdat import WassersteinDistributionalAttack
    from art_wdat.zoo import make_classifier

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    clf = make_classifier(model, (1, 2, 2), 2)
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 2, 2), dtype=np.float32)
    y = clf.predict(x).argmax(1)
    attack = WassersteinDistributionalAttack(clf, eps=0.2, p=2, max_iter=10, verbose=False)
    assert attack.config().loss_fn is remargin
    x_adv = attack.generate(x, y)
    assert attack.last_result_ is not None and attack.last_result_.cost <= 0.2 * (1 + 1e-6)
    assert (clf.predict(x_adv).argmax(1) == y).mean() < 1.0
    with pytest.raises(ValueError, match="loss"):
        WassersteinDistributionalAttack(clf, eps=0.2, loss="nope")
