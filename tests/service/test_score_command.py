"""`densitywatch score`: a file streamed through the real server, scores written as CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from densitywatch.cli import main
from densitywatch.client import Client
from densitywatch.service.server import DensityWatchServer
from tests.service.service_support import hosts_data, pair_data


def test_score_csv_with_strings(server: DensityWatchServer, client: Client, tmp_path: Path) -> None:
    numbers, strings = hosts_data(25, seed=5)
    numbers[3, 1] = 40.0
    data = tmp_path / "hosts.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["os", "extra", "conns", "mem", "cpu"])  # any column order, extras ignored
        for n, s in zip(numbers.tolist(), strings, strict=True):
            w.writerow([s[0], "x", int(n[2]), repr(n[1]), repr(n[0])])
    out = tmp_path / "scores.csv"
    target = f"127.0.0.1:{server.port}"
    code = main(
        [
            "score",
            "--stream",
            "hosts",
            "--data",
            str(data),
            "--out",
            str(out),
            "--target",
            target,
            "--chunk-size",
            "7",
            "--explain",
        ]
    )
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    expected = client.score("hosts", numbers, strings, explain=True)
    assert [int(r["row"]) for r in rows] == list(range(25))
    np.testing.assert_allclose([float(r["log_prob"]) for r in rows], expected.log_prob)
    assert [r["level"] for r in rows] == expected.level
    assert rows[3]["top_features"].split(";")[0] == "mem"
    assert {r["model_version"] for r in rows} == {"000002"}


def test_score_npy_and_failures(server: DensityWatchServer, client: Client, tmp_path: Path) -> None:
    x = pair_data(30, 3, 0.0)
    np.save(tmp_path / "a.npy", x)
    out = tmp_path / "a.csv"
    target = f"127.0.0.1:{server.port}"
    assert (
        main(
            [
                "score",
                "--stream",
                "alpha",
                "--data",
                str(tmp_path / "a.npy"),
                "--out",
                str(out),
                "--target",
                target,
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    np.testing.assert_allclose(
        [float(r["log_prob"]) for r in rows], client.score("alpha", x).log_prob
    )
    np.save(tmp_path / "wide.npy", np.zeros((3, 5)))
    assert (
        main(
            ["score", "--stream", "alpha", "--data", str(tmp_path / "wide.npy"), "--target", target]
        )
        == 1
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,nan\n")
    assert main(["score", "--stream", "alpha", "--data", str(bad), "--target", target]) == 1
    assert main(["score", "--stream", "nosuch", "--data", str(bad), "--target", target]) == 1
