"""docs/tools/v1_tables.py: our CIFAR-10 Tables 4, 6 and 7 joined from compare.py outputs, beside the paper's."""
import importlib.util
import json

from paddle_mbnet.analysis.paper import V1_TABLE6, V1_TABLE6_TOP1, V1_TABLE7, V1_TABLE7_TOP1
from helpers import ROOT


def _tool():
    spec = importlib.util.spec_from_file_location("v1_tables", f"{ROOT}/docs/tools/v1_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder, rows):
    folder.mkdir()
    keys = {"params_m": 3.2, "test_acc_se": 0.005}
    (folder / "results.json").write_text(json.dumps([{**keys, **row} for row in rows]))
    return str(folder)


def test_paper_top1_covers_the_same_variants():
    assert set(V1_TABLE6_TOP1) == set(V1_TABLE6) and set(V1_TABLE7_TOP1) == set(V1_TABLE7)


def test_tables_join_the_runs_and_compute_each_loss(tmp_path):
    width = [{"model": name, "input_size": 32, "macs_m": macs, "test_acc": acc} for name, macs, acc in
             (("mobilenet_v1", 46.4, 0.70), ("mobilenet_v1@0.75", 26.5, 0.68), ("mobilenet_v1@0.5", 12.2, None),
              ("mobilenet_v1@0.25", 3.3, 0.55), ("mobilenet_v1_conv", 397.3, 0.72))]
    main = _write(tmp_path / "main", width)
    res = [_write(tmp_path / f"res{px}", [{"model": "mobilenet_v1", "input_size": px, "macs_m": macs,
                                           "test_acc": acc}])
           for px, macs, acc in ((27, 42.3, 0.671), (23, 28.7, 0.666), (18, 25.3, 0.609))]
    _tool().main([main, *res, "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "tables.md").read_text()
    assert "| Conv MobileNet (`mobilenet_v1_conv`) | 72.00 ± 0.50 | 397.3 |" in text
    assert "| 0.75 MobileNet-32 | 68.00 ± 0.50 | 2.00 |" in text and "| 0.75 MobileNet-224 | 68.4 | 2.2 |" in text
    assert "| 0.5 MobileNet-32 | – | – |" in text  # a variant without a finished run
    assert "| 1.0 MobileNet-18 | 60.90 ± 0.50 | 9.10 |" in text and "| 1.0 MobileNet-128 | 64.4 | 6.2 |" in text
    assert (tmp_path / "out" / "tradeoff.png").stat().st_size > 10000
