"""docs/tools/v1_tables.py: our CIFAR-10 Tables 4, 6 and 7 joined from compare.py outputs, beside the paper's."""
import importlib.util
import json

import pytest

from paddle_mbnet.analysis.paper import V1_TABLE4, V1_TABLE6, V1_TABLE6_TOP1, V1_TABLE7, V1_TABLE7_TOP1
from paddle_mbnet.analysis.report import record_with_all_keys
from helpers import ROOT


def _tool():
    spec = importlib.util.spec_from_file_location("v1_tables", f"{ROOT}/docs/tools/v1_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder, rows):
    folder.mkdir()
    records = [record_with_all_keys({"params_m": 3.2, "test_acc_se": 0.005, "epochs": 3,
                                     "train_input_size": row["input_size"], **row}) for row in rows]
    (folder / "results.json").write_text(json.dumps(records))
    return str(folder)


@pytest.fixture
def folders(tmp_path):
    width = [{"model": name, "input_size": 32, "macs_m": macs, "test_acc": acc} for name, macs, acc in
             (("mobilenet_v1", 46.4, 0.70), ("mobilenet_v1@0.75", 26.5, 0.68), ("mobilenet_v1@0.5", 12.2, None),
              ("mobilenet_v1@0.25", 3.3, 0.55), ("mobilenet_v1_conv", 397.3, 0.72))]
    res = [_write(tmp_path / f"res{px}", [{"model": "mobilenet_v1", "input_size": px, "macs_m": macs,
                                           "test_acc": acc}])
           for px, macs, acc in ((27, 42.3, 0.671), (23, 28.7, 0.666), (18, 25.3, 0.609))]
    return [_write(tmp_path / "main", width), *res]


def test_paper_top1_agrees_across_the_tables():
    assert set(V1_TABLE6_TOP1) == set(V1_TABLE6) and set(V1_TABLE7_TOP1) == set(V1_TABLE7)
    assert V1_TABLE6_TOP1[1.0] == V1_TABLE7_TOP1[224] == V1_TABLE4["MobileNet"][0]  # one model, three tables


def test_tables_join_the_runs_and_compute_each_loss(folders, tmp_path):
    _tool().main([*folders, "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "tables.md").read_text()
    assert "| Conv MobileNet (`mobilenet_v1_conv`) | 72.00 ± 0.50 | 397.3 | 3.20 | 71.7 | 4866 | 29.3 |" in text
    assert "| 0.75 MobileNet-32 | 68.00 ± 0.50 | 2.00 |" in text and "| 0.75 MobileNet-224 | 68.4 | 2.2 |" in text
    assert "| 0.5 MobileNet-32 | – | – |" in text  # a variant without a finished run
    assert "| 1.0 MobileNet-18 | 60.90 ± 0.50 | 9.10 |" in text and "| 1.0 MobileNet-128 | 64.4 | 6.2 |" in text
    assert (tmp_path / "out" / "tradeoff.png").stat().st_size > 10000


def test_plot_points_keep_their_labels_when_a_variant_is_missing(folders):
    tool = _tool()
    rows = {}
    for folder in folders:
        rows.update(tool._rows(folder))
    ours, paper = tool._points(tool._series(rows)["width"])
    assert [label for label, _, _ in ours] == ["1.0 MobileNet-32", "0.75 MobileNet-32", "0.25 MobileNet-32"]
    assert ours[2][1:] == pytest.approx((3.3 / 46.4, 15.0))
    assert len(paper) == 4 and paper[3][1:] == pytest.approx((41 / 569, 20.0))


def test_a_run_counted_at_another_size_is_refused(tmp_path):
    folder = _write(tmp_path / "res27", [{"model": "mobilenet_v1", "input_size": 224, "macs_m": 568.7,
                                          "test_acc": 0.67}])
    json_path = tmp_path / "res27" / "results.json"
    records = json.loads(json_path.read_text())
    records[0]["train_input_size"] = 27
    json_path.write_text(json.dumps(records))
    with pytest.raises(SystemExit, match="trained at 27 px and counted at 224 px"):
        _tool()._rows(folder)
