"""The trusted grader: the wire format is strict, the verdicts are evalplus's own, canonical passes.

Oracle for the verdicts: evalplus 0.3.1's `untrusted_check`, run here, unsandboxed, on the same
(benign, test-written) solutions, inputs and expected outputs; ours must give the same status.
"""
from __future__ import annotations

import math
from collections import Counter, OrderedDict, defaultdict, namedtuple

import numpy as np
import pytest

from codeselect.evaluation.benchmarks import ground_truth
from codeselect.evaluation.sandbox import detect_mode
from codeselect.evaluation.correctness import score
from codeselect.evaluation.wire import Opaque, WireError, decode, encode

needs_ns = pytest.mark.skipif(detect_mode() == "none", reason="no namespace sandbox here")


# ------------------------------------------------------------------------------ wire format
def _same(a, b) -> bool:
    """Equal with identical types all the way down (nan equal to nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all())
    return a == b


@pytest.mark.parametrize("value", [
    None, True, 0, -7, 2 ** 200, -(2 ** 64), pytest.param(7 ** 9000, id="huge-int"),
    pytest.param([1, 2 ** 70, 7 ** 9000, float("nan")], id="flat-list-slow-path"),
    [1.5, "a", None, False], 3.5, -0.0, float("inf"), float("nan"), 1e308,
    "", "a\nb\"\\ \u00e9 \U0001F600", b"\x00\xff", bytearray(b"ab"), 1 + 2j,
    [1, [2, (3, {4})]], (), (1,), {"a": 1, (1, 2): [3], 4: {5: None}}, {1, "x", (2, 3)},
    frozenset({1, 2}), [[]] * 3, np.int64(5), np.float32(1.5), np.bool_(True), np.uint8(255),
    np.array([[1.0, 2.5], [3.0, 4.0]]), np.array([], dtype=np.int32),
])
def test_exact_types_round_trip(value):
    assert _same(decode(encode(value)), value)


def test_std_containers_travel_as_their_base_type():
    Point = namedtuple("Point", "x y")
    assert _same(decode(encode(Counter("aab"))), {"a": 2, "b": 1})
    assert _same(decode(encode(OrderedDict([(2, 1)]))), {2: 1})
    assert _same(decode(encode(defaultdict(int, {1: 2}))), {1: 2})
    assert _same(decode(encode(Point(1, 2))), (1, 2))


def test_subclasses_and_custom_objects_are_opaque():
    class Yes(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    class Lst(list):
        pass

    for v in (Yes(3), Lst([1]), object(), iter([1]), [1, Yes(2)], {"k": Lst()}, (x for x in ())):
        got = decode(encode(v))
        flat = got if isinstance(got, Opaque) else (got[1] if isinstance(got, list) else got["k"])
        assert isinstance(flat, Opaque)
        assert flat != flat and not (flat == 3) and not (3 == flat) and not (flat == [1])


@pytest.mark.parametrize("text", [
    '{"x": 1}', '{"s": [[1]]}', '{"d": [[[1], 2]]}', "[" * 100000, "NaN", '{"i": "zz"}',
    "9" * 5000, '{"t": 1}', '{"np": "object", "v": 1}', '{"nd": "float64", "shape": [3], "v": [1]}',
    '{"c": ["a", 1.0]}', "", "[1,", '"\\ud800"x',
])
def test_malformed_answers_raise(text):
    with pytest.raises(WireError):
        decode(text)


# ------------------------------------------------------------------- same verdicts as evalplus
MBPP_CASES = [
    ("Mbpp/2", "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b)))\n"),
    ("Mbpp/2", "def similar_elements(a, b):\n    return list(set(a) & set(b))[::-1]\n"),
    ("Mbpp/2", "def similar_elements(a, b):\n    return (1,)\n"),
    ("Mbpp/14", "def find_Volume(l, b, h):\n    return (l * b * h) / 2\n"),
    ("Mbpp/14", "def find_Volume(l, b, h):\n    return (l * b * h) / 2 * (1 + 1e-9)\n"),
    ("Mbpp/14", "def find_Volume(l, b, h):\n    return (l * b * h) / 2 * (1 + 1e-3)\n"),
    ("Mbpp/14", "def find_Volume(l, b, h):\n    return int((l * b * h) / 2)\n"),
    ("Mbpp/14", "import numpy as np\ndef find_Volume(l, b, h):\n    return np.float64(l * b * h / 2)\n"),
    ("Mbpp/88", "import collections\ndef freq_count(xs):\n    return dict(collections.Counter(xs))\n"),
    ("Mbpp/88", "import collections\ndef freq_count(xs):\n    return collections.Counter(xs)\n"),
    ("Mbpp/88", "import collections\ndef freq_count(xs):\n"
                "    d = collections.defaultdict(int)\n    for x in xs:\n        d[x] += 1\n    return d\n"),
    ("Mbpp/4", "def heap_queue_largest(nums, n):\n    return sorted(nums, reverse=True)[:n]\n"),
    ("Mbpp/4", "def heap_queue_largest(nums, n):\n    return tuple(sorted(nums, reverse=True)[:n])\n"),
    ("Mbpp/4", "import numpy as np\ndef heap_queue_largest(nums, n):\n"
               "    return np.array(sorted(nums, reverse=True)[:n])\n"),
    ("Mbpp/737", "import re\ndef check_str(s):\n    return re.search(r'^[aeiouAEIOU][A-Za-z0-9_]*', s)\n"),
    ("Mbpp/737", "import re\ndef check_str(s):\n    return bool(re.search(r'^[aeiouAEIOU]', s))\n"),
    ("Mbpp/737", "def check_str(s):\n    return 'yes'\n"),
    ("Mbpp/581", "def surface_Area(b, s):\n    return 2 * b * s + b * b\n"),
    ("Mbpp/558", "def digit_distance_nums(a, b):\n"
                 "    return sum(abs(int(x) - int(y)) for x, y in zip(str(a), str(b)))\n"),
    ("Mbpp/87", "import collections\ndef merge_dictionaries_three(a, b, c):\n"
                "    return dict(collections.ChainMap({}, a, b, c))\n"),
    ("Mbpp/87", "import collections\ndef merge_dictionaries_three(a, b, c):\n"
                "    return collections.OrderedDict(collections.ChainMap({}, a, b, c))\n"),
    ("Mbpp/3", "def is_not_prime(n):\n    return int(n < 2 or any(n % i == 0 for i in range(2, int(n ** 0.5) + 1)))\n"),
    ("Mbpp/3", "def is_not_prime(n):\n    raise ValueError\n"),
    ("Mbpp/3", "def is_not_prime(n):\n    return input()\n"),
    ("Mbpp/3", "def is_not_prime(n):\n    return open('/etc/hostname').read()\n"),
    ("Mbpp/3", "syntax error here\n"),
]
HUMANEVAL_CASES = [
    ("HumanEval/32", None),  # canonical: evalplus 0.3.1 never passes find_zero (see grader.py)
    ("HumanEval/32", "def find_zero(xs):\n    return 0.0\n"),
    ("HumanEval/53", "def add(x, y):\n    return float(x + y)\n"),
    ("HumanEval/53", "def add(x, y):\n    print('noise')\n    return x + y\n"),
    ("HumanEval/2", "def truncate_number(number):\n    return number % 1.0\n"),
    ("HumanEval/2", "def truncate_number(number):\n    return round(number % 1.0, 2)\n"),
    ("HumanEval/0", "def has_close_elements(numbers, threshold):\n    import time\n    time.sleep(2)\n"),
]


def _evalplus_verdicts(bench, cases, cache_dir):
    from evalplus.eval import untrusted_check

    gt = ground_truth(bench, list({t for t, _ in cases}), cache_dir)
    out = []
    for tid, code in cases:
        p = bench.problems[tid]
        code = code or p["prompt"] + p["canonical_solution"]
        out.append(tuple(untrusted_check(bench.name, code, p[f"{k}_input"], p["entry_point"],
                                         gt[tid][k], p["atol"], gt[tid][f"{k}_time"],
                                         fast_check=True)[0] for k in ("base", "plus")))
    return out


@needs_ns
@pytest.mark.parametrize("name", ["mbpp", "humaneval"])
def test_verdicts_match_evalplus(name, mbpp, humaneval, cache_dir, monkeypatch):
    # evalplus's 4 GiB RLIMIT_AS would apply to a fork of this (large) test process: off here
    monkeypatch.setenv("EVALPLUS_MAX_MEMORY_BYTES", "-1")
    bench, cases = (mbpp, MBPP_CASES) if name == "mbpp" else (humaneval, HUMANEVAL_CASES)
    theirs = _evalplus_verdicts(bench, cases, cache_dir)
    samples = [{"task_id": t, "solution": c or bench.problems[t]["prompt"]
                + bench.problems[t]["canonical_solution"]} for t, c in cases]
    res = score(samples, bench, workers=2, cache_dir=cache_dir)
    seen: dict[str, int] = {}
    ours = []
    for t, _ in cases:
        r = res["eval"][t][seen.get(t, 0)]
        seen[t] = seen.get(t, 0) + 1
        ours.append((r["base_status"], r["plus_status"]))
    passed = lambda v: tuple(s == "pass" for s in v)  # noqa: E731  (fail vs timeout may differ)
    assert [passed(v) for v in ours] == [passed(v) for v in theirs], list(zip(cases, ours, theirs))
    assert any(v == ("pass", "pass") for v in ours) and any(v[0] != "pass" for v in ours)


# ------------------------------------------------------------------------ canonical solutions
def _canonical(bench, task_ids):
    return [{"task_id": t, "solution": bench.problems[t]["prompt"]
             + bench.problems[t]["canonical_solution"]} for t in task_ids]


def _mbpp_subset(mbpp) -> list[str]:
    """Every task with a special oracle or a tolerance, and every 8th other task."""
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS, MBPP_OUTPUT_SET_EQ_TASKS

    special = set(MBPP_OUTPUT_SET_EQ_TASKS) | set(MBPP_OUTPUT_NOT_NONE_TASKS) | {
        "surface_Area", "digit_distance_nums", "are_equivalent", "sum_div"}
    ids = list(mbpp.problems)
    return [t for i, t in enumerate(ids) if mbpp.problems[t]["entry_point"] in special
            or mbpp.problems[t]["atol"] or i % 8 == 0]


@needs_ns
@pytest.mark.parametrize("which", ["humaneval_subset", "mbpp_subset",
                                   pytest.param("humaneval_all", marks=pytest.mark.slow),
                                   pytest.param("mbpp_all", marks=pytest.mark.slow)])
def test_canonical_solutions_pass(which, humaneval, mbpp, cache_dir):
    """Every 6th HumanEval+ task plus the two with the largest answers (7 and 11 MB) and
    find_zero; the MBPP+ subset of `_mbpp_subset`; all of both with `-m slow`."""
    if which.startswith("humaneval"):
        bench, ids = humaneval, list(humaneval.problems)
        if which == "humaneval_subset":
            ids = [t for i, t in enumerate(ids) if i % 6 == 0
                   or t in ("HumanEval/15", "HumanEval/130", "HumanEval/32")]
    else:
        bench = mbpp
        ids = _mbpp_subset(mbpp) if which == "mbpp_subset" else list(mbpp.problems)
    res = score(_canonical(bench, ids), bench, workers=2, cache_dir=cache_dir)
    bad = {t: (r[0]["base_status"], r[0]["plus_status"]) for t, r in res["eval"].items()
           if (r[0]["base_status"], r[0]["plus_status"]) != ("pass", "pass")}
    # HumanEval/32 fails in evalplus 0.3.1 whatever the answer (grader.py says why)
    assert len(res["eval"]) == len(ids) and bad == ({"HumanEval/32": ("fail", "fail")}
                                                    if which.startswith("humaneval") else {})
