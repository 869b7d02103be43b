"""Bad data stops at the first batch of a phase, with an error that says what is wrong and how to fix it."""
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from conftest import make_dls
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from slowlearn import Callback, DataLoaders, Learner, TensorLoader, checks


def batches(x, y, bs=4):
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)]


def fit_on(train, valid=None, model=None, loss_func=F.cross_entropy):
    torch.manual_seed(0)
    model = model or nn.Linear(3, 2)
    before = [p.detach().clone() for p in model.parameters()]
    learn = Learner(model, DataLoaders(train, valid if valid is not None else train), loss_func, lr=0.1)
    with pytest.raises(ValueError) as error:
        learn.fit(1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # stopped before any step
    return str(error.value)


def test_labels_out_of_range_name_the_range_and_the_fix():
    message = fit_on(batches(torch.randn(8, 3), torch.tensor([0, 1, 2, 1, 0, 1, 1, 0])))
    assert "run from 0 to 2" in message and "2 outputs" in message and "[0, 1]" in message
    assert "3 outputs" in message  # the fix: a last layer with one output per class


def test_a_model_with_more_outputs_than_the_datas_classes_is_stopped_at_the_first_batch():
    x, y = torch.randn(8, 3), torch.tensor([0, 1, 2, 1, 0, 1, 1, 0])  # labels in range: only the width is wrong
    torch.manual_seed(0)
    model = nn.Linear(3, 12)  # e.g. a conv head that leaves 2x2 logits per class, flattened
    before = [p.detach().clone() for p in model.parameters()]
    learn = Learner(model, DataLoaders(batches(x, y), batches(x, y), classes=["a", "b", "c"]), lr=0.1)
    with pytest.raises(ValueError, match="gives 12 outputs per item, but the data has 3 classes: give its last "
                                         "layer 3 outputs"):
        learn.fit(1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    embed = Learner(nn.Linear(3, 12), DataLoaders(batches(x, y), batches(x, y), classes=["a", "b", "c"]),
                    lambda preds, y: preds.pow(2).mean(), lr=0.1)  # not cross-entropy: any width (an embedding)
    embed.fit(1)
    Learner(nn.Linear(3, 1), DataLoaders(batches(x, y.float()[:, None]), [], classes=["a", "b", "c"]), F.mse_loss,
            lr=0.1).fit(1, valid=False)  # one output: a score, not one per class


def test_negative_labels_are_caught_but_the_ignore_index_is_not():
    assert "run from -1 to 1" in fit_on(batches(torch.randn(4, 3), torch.tensor([0, -1, 1, 0])))
    ignored = torch.tensor([0, -100, 1, 0])
    Learner(nn.Linear(3, 2), DataLoaders(batches(torch.randn(4, 3), ignored), []), lr=0.1).fit(1, valid=False)


def test_bad_labels_in_the_validation_set_are_caught_too():
    good = batches(torch.randn(8, 3), torch.tensor([0, 1] * 4))
    bad = batches(torch.randn(4, 3), torch.tensor([0, 5, 1, 0]))
    learn = Learner(nn.Linear(3, 2), DataLoaders(good, bad), lr=0.1)
    with pytest.raises(ValueError, match="run from 0 to 5"):
        learn.fit(1)


def test_mismatched_batch_sizes():
    train = [(torch.randn(4, 3), torch.tensor([0, 1, 1]))]
    assert "different batch sizes (shapes (4, 3), (3,))" in fit_on(train)


def test_uint8_images_for_a_float_model_say_how_to_convert():
    x = torch.randint(0, 255, (8, 3), dtype=torch.uint8)
    message = fit_on(batches(x, torch.tensor([0, 1] * 4)))
    assert "torch.uint8" in message and "TensorLoader" in message


CROSS_ENTROPIES = [F.cross_entropy, nn.CrossEntropyLoss(), partial(F.cross_entropy, label_smoothing=0.1)]


@pytest.mark.parametrize("loss_func", CROSS_ENTROPIES, ids=["function", "module", "partial"])
def test_float_class_labels_for_cross_entropy(loss_func):
    message = fit_on(batches(torch.randn(8, 3), torch.tensor([0., 1.] * 4)), loss_func=loss_func)
    assert "integer class indices" in message and ".long()" in message


def test_int32_class_labels_for_cross_entropy():
    message = fit_on(batches(torch.randn(8, 3), torch.tensor([0, 1] * 4, dtype=torch.int32)))
    assert "torch.int32" in message and "int64" in message and ".long()" in message


@pytest.mark.parametrize("y_shape, preds_shape", [((8, 1), (8, 2)), ((8, 1, 4, 4), (8, 2, 4, 4))],
                         ids=["classification", "segmentation"])
def test_targets_with_an_extra_dimension_for_cross_entropy(y_shape, preds_shape):
    class Fixed(nn.Module):  # predictions of the given shape
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return self.w + torch.zeros(len(x), *preds_shape[1:])

    y = torch.zeros(y_shape, dtype=torch.long)
    message = fit_on(batches(torch.randn(8, 3), y), model=Fixed())
    assert f"shape {(4, *y_shape[1:])}" in message and "squeeze(1)" in message


def test_regression_and_soft_targets_pass():
    x = torch.randn(8, 3)
    Learner(nn.Linear(3, 1), DataLoaders(batches(x, torch.randn(8, 1)), []), F.mse_loss).fit(1, valid=False)
    soft = torch.softmax(torch.randn(8, 2), 1)  # class probabilities: same shape as the predictions
    Learner(nn.Linear(3, 2), DataLoaders(batches(x, soft), []), F.cross_entropy).fit(1, valid=False)
    counts = torch.randint(0, 9, (8, 1)).float()  # one output, integer-valued targets: not a classifier
    Learner(nn.Linear(3, 1), DataLoaders(batches(x, counts), []), F.mse_loss).fit(1, valid=False)


def test_any_error_on_the_first_batch_describes_the_batch_and_model():
    learn = Learner(nn.Linear(5, 2), make_dls())  # the data has 3 features
    with pytest.raises(RuntimeError) as error:
        learn.fit(1)
    notes = " ".join(getattr(error.value, "__notes__", []))
    assert "first batch: torch.float32 (4, 3) on cpu, torch.int64 (4,) on cpu" in notes
    assert "model parameters torch.float32 on cpu" in notes



def test_a_missing_validation_loader_says_how_to_train_without_one():
    model = nn.Linear(3, 2)
    learn = Learner(model, DataLoaders(batches(torch.randn(8, 3), torch.tensor([0, 1] * 4)), None))
    with pytest.raises(ValueError, match="no valid loader: give DataLoaders one, or fit with valid=False"):
        learn.fit(1)
    before = model.weight.detach().clone()
    learn.fit(1, valid=False)
    assert not torch.equal(model.weight, before)


def test_a_fit_with_neither_phase_is_an_error_rather_than_nothing():
    """fit(train=False, valid=False) ran every fit-level handler, trained nothing, and said nothing."""
    with pytest.raises(ValueError, match=r"fit\(train=False, valid=False\) runs neither phase"):
        Learner(nn.Linear(3, 2), make_dls()).fit(1, train=False, valid=False)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_anywhere_in_a_tensor_loader_are_named_before_training(bad):
    dls = make_dls(n_train=40, bs=4)
    dls.train.x[[13, 29], 1] = bad  # far from the first batch
    model = nn.Linear(3, 2)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"The train set's inputs hold NaN or infinite values, in 2 items \(the first "
                                         r"is item 13\): training on them would turn the weights into NaN"):
        Learner(model, dls).fit(1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_large_finite_inputs_whose_sum_overflows_pass_the_data_check(dtype):
    dls = make_dls(n_train=40, bs=4)
    dls.train.x = dls.train.x.to(dtype)
    dls.train.x[:, 0] = torch.finfo(dtype).max  # finite, but their sum is not: the exact check clears them
    assert not torch.isfinite(dls.train.x.sum(dtype=torch.float32))
    checks.check_loaders(dls, train=True, valid=False)


def test_one_nan_among_large_values_is_still_found():
    dls = make_dls(n_train=40, bs=4)
    dls.train.x[:, 0] = torch.finfo(torch.float32).max
    dls.train.x[21, 2] = float("nan")
    with pytest.raises(ValueError, match=r"in 1 item \(the first is item 21\)"):
        checks.check_loaders(dls, train=True, valid=False)


def test_non_finite_regression_targets_in_a_torch_dataset_are_named():
    x, y = torch.randn(12, 3), torch.randn(12, 1)
    y[7] = float("nan")
    dls = DataLoaders(DataLoader(TensorDataset(x, y), 4), DataLoader(TensorDataset(x, y), 4))
    with pytest.raises(ValueError, match=r"The train set's targets hold NaN .* \(the first is item 7\)"):
        Learner(nn.Linear(3, 1), dls, F.mse_loss).fit(1)


def test_non_finite_inputs_in_the_first_batch_of_any_loader_are_named():
    x = torch.randn(8, 3)
    x[2, 0] = float("nan")
    assert "The batch's inputs hold NaN or infinite values, in 1 item (the first is item 2)" in fit_on(
        batches(x, torch.tensor([0, 1] * 4)))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16])
def test_integer_images_for_a_float_model_say_how_to_convert(dtype):
    x = torch.randint(0, 255, (8, 1, 4, 4)).to(dtype)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    message = fit_on(batches(x, torch.tensor([0, 1] * 4)), model=model)
    assert f"The inputs are {dtype} but the model's parameters are torch.float32" in message
    assert "x.float() / 255" in message


def test_integer_inputs_to_an_embedding_pass():
    tokens = torch.randint(0, 10, (8, 5))
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(20, 2))
    Learner(model, DataLoaders(batches(tokens, torch.tensor([0, 1] * 4)), []), lr=0.1).fit(1, valid=False)


def batchnorm_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


@pytest.mark.parametrize("loader, advice", [
    ("tensor", "set dls.train.drop_last = True"),  # image_folder's and fashion_mnist's loaders take no drop_last=
    ("torch", "DataLoader(..., drop_last=True)"),
])
def test_a_last_batch_of_one_item_for_batchnorm_suggests_drop_last_before_any_step(loader, advice):
    dls = make_dls(n_train=9, bs=4)  # batches of 4, 4, 1
    if loader == "torch":
        dls = DataLoaders(DataLoader(TensorDataset(dls.train.x, dls.train.y), 4, shuffle=True), dls.valid)
    model = batchnorm_mlp()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"The training loader's last batch holds 1 item, and BatchNorm layer '1' "
                                         r"\(BatchNorm1d\) cannot normalise a single value per channel in training.*"
                                         r"drop_last=True") as error:
        Learner(model, dls).fit(1)
    assert advice in str(error.value)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_last_batch_of_one_trains_where_batchnorm_sees_several_values_or_drop_last_is_set():
    x, y = torch.randn(9, 1, 4, 4), torch.randint(0, 2, (9,))
    conv = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(32, 2))
    Learner(conv, DataLoaders(TensorLoader(x, y, 4, device="cpu"), [])).fit(1, valid=False)  # 16 values each
    dls = make_dls(n_train=9, bs=4)
    dls.train.drop_last = True
    Learner(batchnorm_mlp(), dls).fit(1)


def test_dict_batches_say_what_the_learner_takes():
    batches = [{"image": torch.randn(4, 3), "label": torch.tensor([0, 1, 0, 1])}] * 2
    with pytest.raises(TypeError, match=r"The loader yields dict batches \(keys 'image', 'label'\), but the Learner "
                                        r"takes \(inputs, targets, ...\) tuples"):
        Learner(nn.Linear(3, 2), DataLoaders(batches, batches)).fit(1)

    class DictBatches(Callback):
        def predict(self, learn):
            learn.preds = learn.model(learn.batch["image"])

        def get_loss(self, learn):
            learn.loss = learn.loss_func(learn.preds, learn.batch["label"])

    Learner(nn.Linear(3, 2), DataLoaders(batches, batches), cbs=[DictBatches()]).fit(1)


def few_steps_fit(n_items, bs):
    x, y = torch.randn(n_items, 3), torch.randint(0, 2, (n_items,))
    dls = DataLoaders(TensorLoader(x, y, bs, shuffle=True, device="cpu"), TensorLoader(x[:8], y[:8], 8, device="cpu"))
    Learner(nn.Linear(3, 2), dls).fit(1)


def test_an_epoch_of_very_few_steps_warns_with_the_batch_size_to_try():
    with pytest.warns(UserWarning, match=r"only 4 optimizer steps \(1600 training items in batches of 512\).*"
                                         r"batch size of 64 \(25 steps an epoch\).*--bs 64"):
        few_steps_fit(1600, 512)


@pytest.mark.parametrize("n_items, bs", [(1600, 64), (40, 64), (100, 16)])
def test_enough_steps_or_no_smaller_useful_batch_size_do_not_warn(n_items, bs):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        few_steps_fit(n_items, bs)


def test_batches_of_one_item_for_batchnorm_are_named_before_any_step():
    """bs=1 gives every batch a single item: the check (for a last batch of one) passed it, and the fit failed in
    torch with "Expected more than 1 value per channel when training"."""
    from slowlearn.checks import SingleItemBatchError
    model = batchnorm_mlp()
    with pytest.raises(SingleItemBatchError, match=r"The training loader's batches hold 1 item \(batch size 1\), "
                                                   r"and BatchNorm layer '1' \(BatchNorm1d\) cannot normalise") as e:
        Learner(model, make_dls(n_train=9, bs=1)).fit(1)
    assert (e.value.bs, e.value.n_items, e.value.layer) == (1, 9, "'1' (BatchNorm1d)")


def test_a_loader_without_a_length_says_what_the_fit_needs_before_training():
    """A DataLoader over an IterableDataset has no len(): the fit failed with "object of type 'Stream' has no len()",
    saying neither which loader nor why a length is needed."""
    from torch.utils.data import IterableDataset

    class Stream(IterableDataset):
        def __iter__(self):
            return iter([(torch.randn(3), torch.tensor(1))] * 8)

    dls = make_dls()
    learn = Learner(nn.Linear(3, 2), DataLoaders(dls.train, DataLoader(Stream(), 4)))
    with pytest.raises(TypeError, match=r"The valid loader has no length.*IterableDataset.*batches an epoch"):
        learn.fit(1)
    assert learn.opt is None  # refused before anything was made or trained
