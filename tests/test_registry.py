"""The backend registry and the shared Backend.solve contract."""

import numpy as np
import pytest

import backends
from backends import BACKENDS, BackendSpec, available_backends, get_backend, solve
from backends.base import Backend, Option, RawSolution, child_seeds
from qcbo import BackendUnavailableError, InputError, SolverError

from .helpers import random_problem


def test_exact_is_always_available():
    assert "exact" in available_backends()
    assert solve(random_problem(5, 2, seed=0), "exact", seed=0).status == "optimal"


def test_unknown_backend_names_the_choices():
    with pytest.raises(BackendUnavailableError, match="unknown backend 'nope'.*exact"):
        get_backend("nope")


def test_missing_package_says_what_to_install(monkeypatch):
    spec = BackendSpec("ghost", "backends.ghost:Ghost", ("no_such_package_xyz",), "ghost-extra")
    monkeypatch.setitem(BACKENDS, "ghost", spec)
    assert "ghost" not in available_backends()
    with pytest.raises(BackendUnavailableError, match="pip install ghost-extra"):
        get_backend("ghost")


class _Crashing(Backend):
    name = "crashing"
    options = {"mode": Option("crash", "crash or infeasible")}

    def _solve(self, problem, *, seed, time_limit, mode):
        if mode == "crash":
            raise RuntimeError("segfault-ish")
        x = np.ones(problem.n, dtype=np.int8)
        return RawSolution(x, proven_optimal=True)


def test_solver_exceptions_become_solver_error():
    with pytest.raises(SolverError, match="crashing: RuntimeError: segfault-ish"):
        _Crashing().solve(random_problem(3, 1, seed=0), seed=0)


def test_proven_but_infeasible_answer_is_flagged():
    result = _Crashing().solve(random_problem(3, 1, seed=0), seed=0, mode="infeasible")
    assert result.status == "infeasible" and not result.feasible


def test_seed_is_drawn_and_recorded_when_not_given():
    result = _Crashing().solve(random_problem(3, None, seed=0), mode="ok")
    assert isinstance(result.seed, int)


def test_time_limit_must_be_positive():
    with pytest.raises(InputError, match="time_limit"):
        get_backend("exact").solve(random_problem(3, 1, seed=0), time_limit=0)


def test_child_seeds_are_reproducible_and_distinct():
    a, b = child_seeds(7, 5), child_seeds(7, 5)
    assert a == b and len(set(a)) == 5


def test_registry_lines_name_real_modules_when_available():
    for name in available_backends():
        cls = backends.backend_class(name)
        assert cls.name == name
