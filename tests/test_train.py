"""The shared training loop: the weight average (``TrainConfig.ema``) is what gets validated and kept."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _run(ema: float, steps: int = 6):
    from napari_pathreview.backend.train import TrainConfig, fit

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    x, y = torch.randn(16, 3), torch.randn(16, 2)
    seen, validated = [], []

    def loss_fn(m, batch):
        seen.append(m[0].weight.detach().clone())  # the raw weights after the previous step
        return ((m(batch[0]) - batch[1]) ** 2).mean()

    def validate(m):
        validated.append(m[0].weight.detach().clone())
        return {"score": 0.0}

    cfg = TrainConfig(epochs=1, lr=0.1, ema=ema, seed=0)
    res = fit(model, loss_fn, lambda epoch: [(x, y)] * steps, validate, cfg, steps)
    return model, seen, validated, res


def test_ema_keeps_the_per_step_moving_average_of_the_weights():
    decay = 0.7
    model, seen, validated, res = _run(decay)
    after = seen[1:] + [model[0].weight.detach()]  # the weights after each of the 6 steps
    expected = after[0].clone()  # the average starts at the first step's weights
    for w in after[1:]:
        expected = decay * expected + (1 - decay) * w
    torch.testing.assert_close(res.best_state["0.weight"], expected)
    torch.testing.assert_close(validated[0], expected)
    assert not torch.allclose(expected, model[0].weight.detach(), atol=1e-3)  # raw weights moved on
    assert set(res.best_state) == set(model.state_dict())  # loads into the model as is
    assert not np.allclose(res.best_state["1.running_mean"].numpy(), model[1].running_mean.numpy())


def test_without_ema_the_raw_weights_are_kept():
    model, _, validated, res = _run(0.0)
    torch.testing.assert_close(res.best_state["0.weight"], model[0].weight.detach())
    torch.testing.assert_close(validated[0], model[0].weight.detach())


def test_amp_runs_the_forward_in_bfloat16_and_keeps_float32_weights_that_learn():
    from napari_pathreview.backend.train import TrainConfig, fit

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1))
    x = torch.randn(4, 3, 16, 16)
    y = (x[:, :1] > 0).float()  # learnable: the sign of the first channel
    dtypes, losses = [], []

    def loss_fn(m, batch):
        out = m(batch[0])
        dtypes.append(out.dtype)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), batch[1])
        losses.append(loss.item())
        return loss

    cfg = TrainConfig(epochs=6, lr=0.03, amp=True, seed=0)
    res = fit(model, loss_fn, lambda epoch: [(x, y)] * 10, lambda m: {"score": -losses[-1]}, cfg, 10)
    assert set(dtypes) == {torch.bfloat16}
    assert all(v.dtype == torch.float32 for v in res.best_state.values())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
