"""The methods that apply to language models run on the T5 and GPT-2 pools through their adapters."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from text_helpers import gpt2_pool_dirs, save_glue_datasets, t5_pool_dirs

from fusion_bench.constants import config_dir
from fusion_bench.merging.task_arithmetic import task_vector
from fusion_bench.method.adamerging import stack_task_vectors
from fusion_bench.modelpool.gpt2_classification import GPT2ClassificationPool
from fusion_bench.modelpool.seq2seq_lm import Seq2SeqLMPool
from fusion_bench.models.merged import TaskVectorMergedModel, tied_aliases, untied_state_dict
from fusion_bench.taskpool.glue_text_generation import GLUETextGenerationTaskPool
from fusion_bench.taskpool.gpt2_glue import GPT2GLUETaskPool

TASKS = ("cola", "sst2")
SHORT = {
    "max_steps": 2,
    "adamerging_steps": 2,
    "num_fisher_examples": 2,
    "num_regmean_examples": 2,
    "batch_size": 2,
}


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("t5")
    pre, experts = t5_pool_dirs(tmp, experts=TASKS)
    data = save_glue_datasets(tmp / "data", TASKS)
    tasks = {t: {"dataset": d, "metadata": {"version": 1}} for t, d in data.items()}
    pool = Seq2SeqLMPool({"_pretrained_": pre, **experts}, tasks=tasks, cache_dir=str(tmp / "c"))
    taskpool = GLUETextGenerationTaskPool(pre, tasks, cache_dir=str(tmp / "c"), max_new_tokens=2)
    return pool, taskpool


@pytest.fixture(scope="module")
def gpt2_pools(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpt2")
    pre, experts = gpt2_pool_dirs(tmp, experts=TASKS)
    data = save_glue_datasets(tmp / "data", TASKS)
    tasks = {t: {"dataset": d, "metadata": {"version": 1}} for t, d in data.items()}
    pool = GPT2ClassificationPool(
        {"_pretrained_": pre, **experts}, tasks=tasks, cache_dir=str(tmp / "c")
    )
    taskpool = GPT2GLUETaskPool(pre, tasks, heads=experts, cache_dir=str(tmp / "c"))
    return pool, taskpool


def test_tied_embeddings_are_merged_once(pools):
    pool, _ = pools
    base = pool.load_pretrained()
    aliases = tied_aliases(base)
    assert "encoder.embed_tokens.weight" in aliases and "shared.weight" not in aliases
    tvs = stack_task_vectors(pool, untied_state_dict(base), aliases)
    assert not set(tvs) & aliases
    merged = TaskVectorMergedModel(base, tvs, mode="layer_wise", init_value=0.3).merge()
    # the merge stays tied, and equals task arithmetic with lambda = 0.3
    assert merged.encoder.embed_tokens.weight is merged.shared.weight
    pre = pool.load_pretrained().state_dict()
    expected = dict(pre)
    for name in TASKS:
        for k, v in task_vector(pool.load_state_dict(name), pre, name).items():
            expected[k] = expected[k] + 0.3 * v
    for k, v in merged.state_dict().items():
        assert torch.allclose(v, expected[k], atol=1e-6), k


@pytest.mark.parametrize(
    "method",
    [
        "simple_average",
        "task_arithmetic",
        "ties_merging",
        "dare_task_arithmetic",
        "fisher_merging",
        "regmean",
        "regmean_plusplus",
        "adamerging",
        "concrete_task_arithmetic",
        "concrete_adamerging",
        "weight_ensembling_moe",
        "smile_upscaling",
    ],
)
@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_method_runs_on_text_pools(request, family, method):
    pool, taskpool = request.getfixturevalue("pools" if family == "t5" else "gpt2_pools")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("fusion_bench", overrides=[f"method={method}"]).method
    for k, v in SHORT.items():
        if k in cfg:
            cfg[k] = v
    fused = instantiate(cfg).run(pool)
    expected = "T5ForConditionalGeneration" if family == "t5" else "GPT2Model"
    assert type(fused).__name__ == expected
    out = taskpool.evaluate(fused)
    assert set(out) == set(TASKS)
    for metrics in out.values():
        assert 0.0 <= metrics["accuracy"] <= 1.0
    pre = pool.load_pretrained().state_dict()
    changed = any(
        not torch.equal(v, pre[k]) for k, v in fused.state_dict().items() if k in pre
    ) or len(fused.state_dict()) != len(pre)
    assert changed  # the experts made a difference


def test_twin_merging_routes_gpt2_and_t5_inputs(pools, gpt2_pools):
    from fusion_bench.errors import FusionBenchError
    from fusion_bench.models.twin_moe import TwinMergingModel

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("fusion_bench", overrides=["method=glue/twin_merging"]).method
    assert cfg.router_split == "train"
    cfg.max_steps, cfg.batch_size = 2, 2
    pool, taskpool = gpt2_pools
    fused = instantiate(cfg).run(pool)
    assert isinstance(fused, TwinMergingModel)
    ids = torch.tensor([[5, 6, 7, 0], [5, 6, 0, 0]])
    mask = (ids != 0).long()
    weights = fused.routing_weights(input_ids=ids, attention_mask=mask)
    assert weights.shape == (2, len(TASKS))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    out = taskpool.evaluate(fused)
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in out.values())
    t5_pool, t5_taskpool = pools
    twin = instantiate(cfg).run(t5_pool)
    assert isinstance(twin, TwinMergingModel)
    ids = torch.tensor([[5, 6, 7, 1], [5, 6, 1, 0]])
    mask = (ids != 0).long()
    weights = twin.routing_weights(input_ids=ids, attention_mask=mask)
    assert weights.shape == (2, len(TASKS))
    assert t5_pool.embedding_names(twin.backbone) == []  # embeddings stay merged on T5
    out = t5_taskpool.evaluate(twin)  # generate routes each decoding step by the input's weights
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in out.values())
    with pytest.raises(FusionBenchError, match="cannot generate text"):
        instantiate(cfg).run(pool).generate(ids)
