import importlib.util
import json

import pytest
import torch

from ppodd.cell.class_grid import load_order_json
from ppodd.cell.clip_order import cosine_distance, main, poco_order
from ppodd.errors import ConfigError


def test_cosine_distance_is_one_minus_cosine():
    d = cosine_distance(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
    torch.testing.assert_close(d.diagonal(), torch.zeros(3, dtype=torch.float64))
    assert d[0, 1].item() == pytest.approx(1.0)
    assert d[0, 2].item() == pytest.approx(1 - 2 ** -0.5)


def test_poco_order_places_similar_names_next_to_each_other():
    # Visit order (0,0), (1,0), (0,1), (1,1): dog is nearest cat, so it goes under cat; bus is
    # nearer cat than car is, so it takes (0,1), and car is left for the last cell.
    vectors = {"cat": [1.0, 0.1], "dog": [1.0, 0.2], "car": [0.1, 1.0], "bus": [0.2, 1.0]}
    order = poco_order(["cat", "car", "dog", "bus"], 2, 2, embed=lambda names: torch.tensor([vectors[n] for n in names]))
    assert order == [[0, 3], [2, 1]]


def test_main_writes_a_grid_that_runs_can_load(tmp_path, monkeypatch):
    monkeypatch.setattr("ppodd.cell.clip_order.clip_text_embeddings", lambda names: torch.eye(len(names)))
    out = tmp_path / "order.json"
    main(["--dataset", "cifar10", "--rows", "2", "--cols", "5", "--out", str(out)])
    grid = load_order_json(out, 2, 5, 10)
    assert sorted(sum(grid, [])) == list(range(10)) and json.loads(out.read_text()) == grid


@pytest.mark.skipif(importlib.util.find_spec("transformers") is not None, reason="transformers is installed")
def test_clip_embeddings_without_extra_is_a_clear_config_error():
    from ppodd.cell.clip_order import clip_text_embeddings
    with pytest.raises(ConfigError, match=r"pip install 'ppodd\[clip\]'"):
        clip_text_embeddings(["cat"])
