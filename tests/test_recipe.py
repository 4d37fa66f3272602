"""The training recipe's parts: schedule shape, warm-up cap, no-decay groups, label smoothing, weight EMA, TTA."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import paddle_mbnet as pm
from paddle_mbnet.models.layers import DepthwiseConv2D
from paddle_mbnet.training import loop, optim
from paddle_mbnet.training.config import load_config
from paddle_mbnet.training.ema import ModelEma

STEPS_PER_EPOCH = 10


def _lrs(overrides):
    cfg = load_config(None, overrides)
    sched = optim.build_scheduler(cfg, STEPS_PER_EPOCH, notify=False)
    lrs = []
    for _ in range(cfg["Global"]["epochs"] * STEPS_PER_EPOCH):
        lrs.append(sched.get_lr())
        sched.step()
    return np.array(lrs)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_warms_up_peaks_and_ends_at_zero(schedule):
    lrs = _lrs(["Global.epochs=4", "Optimizer.lr=0.01", "Optimizer.warmup_epochs=0.5",
                f"Optimizer.schedule={schedule}"])
    assert lrs[0] == pytest.approx(1e-4)  # lr / 100
    assert lrs.argmax() == 5 and lrs.max() == pytest.approx(0.01)  # peak after half an epoch
    assert np.all(np.diff(lrs[:6]) > 0) and np.all(np.diff(lrs[5:]) < 0)
    assert lrs[-1] < 0.01 / 30  # the last step trains at (nearly) zero
    if schedule == "linear":
        assert lrs[5 + 14] == pytest.approx(0.01 * (1 - 14 / 35))  # straight down over the 35 steps left


def test_warmup_longer_than_a_quarter_of_the_run_is_capped_with_a_notice(capsys):
    lrs = _lrs(["Global.epochs=1", "Optimizer.warmup_epochs=1", "Optimizer.lr=0.01"])
    assert lrs.argmax() == 2  # 10 steps // 4
    cfg = load_config(None, ["Global.epochs=1", "Optimizer.warmup_epochs=1"])
    assert optim.warmup_steps(cfg, STEPS_PER_EPOCH) == 2
    assert "warming up for 2 steps instead" in capsys.readouterr().err
    assert optim.warmup_steps(load_config(None, ["Optimizer.warmup_epochs=0.5"]), STEPS_PER_EPOCH) == 5


def _conv_bn():
    return paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3, bias_attr=True), paddle.nn.BatchNorm2D(4))


def _separable_block():
    """A 3-channel stem, a depthwise conv (``groups == channels``) and a pointwise conv, each with a BatchNorm."""
    return paddle.nn.Sequential(_conv_bn(), paddle.nn.Conv2D(4, 4, 3, groups=4, bias_attr=False),
                                paddle.nn.BatchNorm2D(4), paddle.nn.Conv2D(4, 6, 1, bias_attr=False))


@pytest.mark.parametrize("name", ["AdamW", "Adam", "Momentum"])
@pytest.mark.parametrize("no_decay_bn_bias,no_decay_depthwise", [(True, False), (False, False), (False, True),
                                                                 (True, True)])
def test_no_decay_groups(name, no_decay_bn_bias, no_decay_depthwise):
    """With zero gradients only weight decay moves a parameter: the exempt ones stay where they are."""
    model = _separable_block()
    cfg = load_config(None, [f"Optimizer.name={name}", "Optimizer.weight_decay=0.1", "Optimizer.schedule=constant",
                             "Optimizer.warmup_epochs=0", f"Optimizer.no_decay_bn_bias={no_decay_bn_bias}",
                             f"Optimizer.no_decay_depthwise={no_decay_depthwise}"])
    opt, _ = optim.build_optimizer(cfg, model, STEPS_PER_EPOCH)
    for p in model.parameters():
        p.set_value(paddle.ones_like(p))  # biases start at 0, which decay would not move
    before = {n: p.numpy().copy() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = paddle.zeros_like(p)  # noqa: the optimizer reads .grad
    opt.step()
    depthwise = {"1.weight"}  # the stem's [4, 3, 3, 3] and the pointwise [6, 4, 1, 1] filters are no such thing
    for n, p in model.named_parameters():
        if p.stop_gradient:
            continue  # BatchNorm's running statistics: paddle keeps them as untrained parameters
        moved = not np.allclose(before[n], p.numpy())
        exempt = (no_decay_bn_bias and len(p.shape) <= 1) or (no_decay_depthwise and n in depthwise)
        assert moved == (not exempt), (n, moved)


@pytest.mark.parametrize("name,count", [("mobilenet_v1", 13), ("mobilenet_v2", 17), ("mobilenet_v1_conv", 0),
                                        ("resnet18", 0)])
def test_depthwise_filters_are_those_of_the_depthwise_layers(name, count):
    model = pm.build_model(name, num_classes=10, **({"scale": 0.25} if name.startswith("mobilenet") else {}))
    expected = {id(layer.weight) for layer in model.sublayers() if isinstance(layer, DepthwiseConv2D)}
    # V1: one per separable layer of Table 1 (13); V2: one per inverted-residual block (17)
    assert optim.depthwise_filters(model) == expected and len(expected) == count


def test_a_full_conv_reading_one_channel_is_no_depthwise_conv():
    """Its filters have a depthwise filter's shape [C, 1, k, k]; only the layer tells them apart."""
    model = paddle.nn.Sequential(paddle.nn.Conv2D(1, 4, 3), paddle.nn.Conv2D(4, 4, 3, groups=4))
    assert optim.depthwise_filters(model) == {id(model[1].weight)}


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_betas_and_epsilon_reach_the_optimizer(name):
    """Two steps on one weight against Adam's definition, with betas and epsilon far from the defaults (the first
    step alone would not tell: bias correction makes it independent of the betas)."""
    beta1, beta2, eps, lr = 0.5, 0.8, 0.3, 0.1
    cfg = load_config(None, [f"Optimizer.name={name}", "Optimizer.weight_decay=0", "Optimizer.schedule=constant",
                             "Optimizer.warmup_epochs=0", f"Optimizer.lr={lr}", f"Optimizer.beta1={beta1}",
                             f"Optimizer.beta2={beta2}", f"Optimizer.epsilon={eps}"])
    layer = paddle.nn.Linear(1, 1, bias_attr=False)
    weight = layer.weight
    weight.set_value(paddle.ones_like(weight))
    opt, _ = optim.build_optimizer(cfg, layer, STEPS_PER_EPOCH)
    want, m, v = 1.0, 0.0, 0.0
    for step, grad in enumerate([1.0, -2.0], start=1):
        weight.grad = paddle.full([1, 1], grad)  # noqa: the optimizer reads .grad
        opt.step()
        m, v = beta1 * m + (1 - beta1) * grad, beta2 * v + (1 - beta2) * grad ** 2
        want -= lr * (m / (1 - beta1 ** step)) / (np.sqrt(v / (1 - beta2 ** step)) + eps)
    assert weight.numpy().item() == pytest.approx(want, rel=1e-5)


def test_label_smoothing_matches_its_definition():
    logits = paddle.randn([6, 10])
    labels = paddle.to_tensor([[0], [3], [9], [1], [1], [5]], dtype="int64")
    logp = F.log_softmax(logits, axis=1).numpy()
    target = np.full((6, 10), 0.1 / 10)
    target[np.arange(6), labels.numpy().ravel()] += 0.9
    expected = -(target * logp).sum(1).mean()
    assert float(loop.classification_loss(logits, labels, 0.1)) == pytest.approx(expected, rel=1e-5)
    plain = float(F.cross_entropy(logits, labels))
    assert float(loop.classification_loss(logits, labels, 0.0)) == pytest.approx(plain, rel=1e-6)


def test_ema_update_swap_and_checkpoint_round_trip():
    model = _conv_bn()
    ema = ModelEma(model, decay=0.9, every=1)
    start = {n: t.numpy().copy() for n, t in model.state_dict().items()}
    for p in model.parameters():
        p.set_value(p + 1.0)
    ema.update()  # first update: decay min(0.9, 1/10) = 0.1
    assert "1._mean" in ema.shadow and "1._variance" in ema.shadow  # BatchNorm statistics are averaged too
    for name, tensor in model.state_dict().items():
        np.testing.assert_allclose(ema.shadow[name].numpy(), 0.1 * start[name] + 0.9 * tensor.numpy(), rtol=1e-6)
    weight = model[0].weight.numpy()
    with ema.applied(model):
        np.testing.assert_allclose(model[0].weight.numpy(), ema.shadow["0.weight"].numpy())
    np.testing.assert_array_equal(model[0].weight.numpy(), weight)  # trained weights are back

    state = ema.state_dict()
    other = ModelEma(_conv_bn(), decay=0.9, every=1)
    other.set_state_dict(state)
    assert other.updates == 1 and other.steps == 1
    np.testing.assert_array_equal(other.shadow["0.weight"].numpy(), ema.shadow["0.weight"].numpy())


def test_ema_averages_every_fourth_step_over_the_four_decays():
    model = _conv_bn()
    ema = ModelEma(model, decay=0.9)  # the default interval, 4 steps
    start = model[0].weight.numpy().copy()
    model[0].weight.set_value(model[0].weight + 1.0)
    for _ in range(3):
        ema.update()
    np.testing.assert_array_equal(ema.shadow["0.weight"].numpy(), start)  # steps 1-3 only count
    ema.update()
    kept = (1 / 10) * (2 / 11) * (3 / 12) * (4 / 13)  # each step's warm-up decay min(0.9, s / (9 + s))
    np.testing.assert_allclose(ema.shadow["0.weight"].numpy(), kept * start + (1 - kept) * (start + 1.0), rtol=1e-6)
    assert (ema.steps, ema.averaged_at, ema.updates) == (4, 4, 1)

    ema.update()  # a checkpoint between averages resumes the count: the next average comes at step 8 in both
    resumed = ModelEma(model, decay=0.9)
    resumed.set_state_dict(ema.state_dict())
    for average in (ema, resumed):
        for _ in range(3):
            average.update()
    assert resumed.averaged_at == ema.averaged_at == 8 and resumed.updates == ema.updates == 2
    np.testing.assert_array_equal(resumed.shadow["0.weight"].numpy(), ema.shadow["0.weight"].numpy())


def test_ema_flush_folds_in_the_steps_since_the_last_average():
    model = _conv_bn()
    ema = ModelEma(model, decay=0.9)
    start = model[0].weight.numpy().copy()
    model[0].weight.set_value(model[0].weight + 1.0)
    ema.update()
    ema.update()
    ema.flush()  # an epoch ending two steps after an average: both count in what is evaluated
    kept = (1 / 10) * (2 / 11)
    np.testing.assert_allclose(ema.shadow["0.weight"].numpy(), kept * start + (1 - kept) * (start + 1.0), rtol=1e-6)
    after = ema.shadow["0.weight"].numpy().copy()
    ema.flush()  # nothing new: no change
    np.testing.assert_array_equal(ema.shadow["0.weight"].numpy(), after)
    for _ in range(3):
        ema.update()
    assert ema.averaged_at == 2  # the next average is four steps after the flush
    ema.update()
    assert ema.averaged_at == 6


def test_ema_resumes_an_older_checkpoint_averaging_on_every_step():
    model = _conv_bn()
    ema = ModelEma(model, decay=0.9)
    ema.set_state_dict({"shadow": ema.shadow, "updates": 7})  # saved before the interval existed
    assert (ema.every, ema.steps, ema.averaged_at) == (1, 7, 7)
    ema.update()
    assert ema.averaged_at == 8  # its run goes on as it began


class _LeftRight(paddle.nn.Layer):
    """Class 0 when the left half is brighter, else 1: mirroring the image flips its prediction."""

    def forward(self, x):
        left, right = x[:, :, :, :2].mean(axis=[1, 2, 3]), x[:, :, :, 2:].mean(axis=[1, 2, 3])
        return paddle.stack([left - right + 0.1, right - left], axis=1)


def test_tta_averages_the_logits_of_each_image_and_its_mirror():
    images = paddle.to_tensor(np.random.RandomState(0).rand(8, 3, 4, 4).astype("float32"))
    labels = _LeftRight()(images).argmax(axis=1).reshape([-1, 1])
    result = loop.evaluate(_LeftRight(), [(images, labels)], tta=True)
    assert result["acc"] == 1.0
    # logits + mirrored logits = (0.1, 0) for every image: TTA always answers class 0
    assert result["acc_tta"] == pytest.approx(float((labels.numpy() == 0).mean()))
    assert "acc_tta" not in loop.evaluate(_LeftRight(), [(images, labels)])


@pytest.mark.parametrize("warmup", [0, 0.5])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_more_epochs_on_resume_follow_the_longer_schedule(schedule, warmup):
    """A run resumed with more Global.epochs continues on the schedule a run of that length takes from the start."""
    short = ["Optimizer.lr=0.01", f"Optimizer.schedule={schedule}", f"Optimizer.warmup_epochs={warmup}"]
    cfg_short, cfg_long = load_config(None, short + ["Global.epochs=4"]), load_config(None, short + ["Global.epochs=8"])
    sched = optim.build_scheduler(cfg_short, STEPS_PER_EPOCH, notify=False)
    for _ in range(4 * STEPS_PER_EPOCH):  # the short run to its end: its rate is 0
        sched.step()
    resumed = optim.build_scheduler(cfg_long, STEPS_PER_EPOCH, notify=False)
    resumed.set_state_dict(sched.state_dict())
    optim.continue_on_new_length(resumed)
    fresh = optim.build_scheduler(cfg_long, STEPS_PER_EPOCH, notify=False)
    for _ in range(4 * STEPS_PER_EPOCH):
        fresh.step()
    assert resumed() == pytest.approx(fresh()) and resumed() > 0.01 / 10  # the rate of the first resumed step
    for _ in range(3):
        resumed.step()
        fresh.step()
        assert resumed.get_lr() == pytest.approx(fresh.get_lr()) and resumed.get_lr() > 0.01 / 10


def test_the_largest_seed_shuffles():
    """Seeds up to 2**32 - 1 are valid: the shuffle's numpy seed mixes seed and epoch modulo 2**32."""
    from paddle_mbnet.training.trainer import EpochBatchSampler

    sampler = EpochBatchSampler(list(range(10)), 5, load_config(None, ["Global.seed=4294967295"])["Global"]["seed"])
    sampler.set_epoch(3)
    assert sorted(i for batch in sampler for i in batch) == list(range(10))
