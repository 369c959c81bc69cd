"""Issue 30 (third sweep), item 6: ``--scheduler tcp://HOST:PORT`` that does not answer like Dask
fails within seconds (not 10 minutes at 0 %), naming the address and what answered; a closed port
or an unknown host says it cannot connect (not "out of memory"). Everything binds 127.0.0.1."""
from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep.core.cluster import LOCAL_SCHEDULER, probe_scheduler
from detection.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def http_port():
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def silent_port():
    """A port that accepts connections and never sends a byte (nor answers HTTP)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    conns = []
    stop = threading.Event()

    def accept():
        s.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(s.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield s.getsockname()[1]
    stop.set()
    t.join()
    for c in conns:
        c.close()
    s.close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _pngs(folder: Path) -> Path:
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((32, 32), 50, np.uint8))
    return folder


def test_a_real_dask_scheduler_passes_the_probe():
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, host="127.0.0.1", protocol="tcp://", dashboard_address=None,
                      scheduler_kwargs=LOCAL_SCHEDULER) as c:
        t0 = time.perf_counter()
        probe_scheduler(c.scheduler_address)
        assert time.perf_counter() - t0 < 2


def test_predict_on_an_http_port_fails_in_seconds_naming_it(http_port, tmp_path, capsys):
    addr = f"tcp://127.0.0.1:{http_port}"
    t0 = time.perf_counter()
    rc = main(["predict", "--weights", str(REPO / "weights" / "vinbig_phantom_yolo11n.pt"), "--source",
               str(_pngs(tmp_path / "src")), "--out", str(tmp_path / "o.csv"), "--scheduler", addr, "device=cpu"])
    dt = time.perf_counter() - t0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and dt < 30, (rc, dt, err)
    assert addr in err and "not a Dask scheduler" in err and "HTTP server" in err and "HTTP/1.0 200" in err
    assert not (tmp_path / "o.csv").exists()


def test_convert_on_a_silent_port_fails_in_seconds_naming_it(silent_port, tmp_path, capsys, write_dicom, ramp):
    addr = f"tcp://127.0.0.1:{silent_port}"
    (tmp_path / "dcm").mkdir()
    write_dicom(tmp_path / "dcm" / "a.dcm", ramp(40, 40))
    t0 = time.perf_counter()
    rc = main(["convert", str(tmp_path / "dcm"), str(tmp_path / "png"), "--scheduler", addr])
    dt = time.perf_counter() - t0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert dt < 30, dt
    assert rc == 2 and addr in err and "sent nothing" in err, err


def test_probe_of_a_silent_port_names_what_answered(silent_port):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"accepted the connection but sent nothing within 1 s") as e:
        probe_scheduler(f"tcp://127.0.0.1:{silent_port}", timeout=1.0)
    assert f"tcp://127.0.0.1:{silent_port}" in str(e.value) and time.perf_counter() - t0 < 10


def test_a_service_that_talks_first_is_named_by_its_first_bytes():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]

    def banner():
        c, _ = s.accept()
        c.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
        time.sleep(0.5)
        c.close()

    t = threading.Thread(target=banner, daemon=True)
    t.start()
    with pytest.raises(ValueError, match=r"not Dask answered: b'SSH-2.0-OpenSSH_9.6"):
        probe_scheduler(f"tcp://127.0.0.1:{port}", timeout=2.0)
    t.join()
    s.close()


def test_a_closed_port_says_it_cannot_connect(tmp_path, capsys):
    addr = f"tcp://127.0.0.1:{_closed_port()}"
    rc = main(["predict", "--weights", str(REPO / "weights" / "vinbig_phantom_yolo11n.pt"), "--source",
               str(_pngs(tmp_path / "src")), "--out", str(tmp_path / "o.csv"), "--scheduler", addr, "device=cpu"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and addr in err and "cannot connect" in err and "memory" not in err, err


def test_an_unknown_host_says_it_cannot_connect():
    with pytest.raises(ValueError, match="cannot connect: unknown host 'no-such-host.invalid'"):
        probe_scheduler("tcp://no-such-host.invalid:8786", timeout=2.0)
