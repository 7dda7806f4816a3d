"""What JAXMg's users import beside the ops: potri_symmetrize, jaxmg.utils,
__version__ (NetKet 3.23's gate)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jaxmg
from helpers import ROW, is_complex, mesh, put, spd
from packaging.version import Version


def test_version_passes_netket_gate():
    assert Version(jaxmg.__version__) >= Version("1.4.1")
    import pathlib
    import tomllib
    root = pathlib.Path(__file__).resolve().parents[2]
    with open(root / "pyproject.toml", "rb") as f:
        assert tomllib.load(f)["project"]["version"] == jaxmg.__version__
    assert f"## {jaxmg.__version__}" in (root / "CHANGELOG.md").read_text()


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_potri_symmetrize_upper_or_full(rng, dtype):
    m, n = mesh(4), 12
    A = spd(rng, n, dtype)
    inv = np.linalg.inv(A)
    for given in (inv, np.triu(inv)):   # jaxmg's full output, 0.0.9's upper triangle
        out = jaxmg.potri_symmetrize(put(given, m, ROW))
        np.testing.assert_allclose(np.asarray(out), inv, rtol=1e-12, atol=1e-12)
    # the ctx output, symmetrised again, is unchanged
    a_inv, status = jax.shard_map(lambda a: jaxmg.potri_shardmap_ctx(a, 3), mesh=m,
                                  in_specs=ROW, out_specs=(ROW, P(None)), check_vma=False)(
        put(A, m, ROW))
    assert int(status[0]) == 0
    sym = jax.jit(jaxmg.potri_symmetrize)(a_inv)
    np.testing.assert_allclose(np.asarray(sym), np.asarray(a_inv), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="square"):
        jaxmg.potri_symmetrize(jnp.ones((2, 3)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_random_psd(dtype):
    a = np.asarray(jaxmg.utils.random_psd(16, dtype, seed=3))
    assert a.shape == (16, 16) and a.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(a, np.asarray(jaxmg.utils.random_psd(16, dtype, seed=3)))
    assert np.abs(a - a.conj().T).max() == 0
    w = np.linalg.eigvalsh(a.astype(np.complex128 if is_complex(dtype) else np.float64))
    assert w.min() >= 0.99 and w.max() < 10
    assert not np.array_equal(a, np.asarray(jaxmg.utils.random_psd(16, dtype, seed=4)))


def test_utils_helpers():
    m = mesh(4)
    x = put(np.ones((8, 8)), m, ROW)
    got_mesh, spec = jaxmg.utils.get_mesh_and_spec_from_array(x)
    assert got_mesh == m and spec == ROW
    with pytest.raises(ValueError, match="NamedSharding"):
        jaxmg.utils.get_mesh_and_spec_from_array(jax.device_put(np.ones(3), jax.devices()[0]))
    assert jaxmg.utils.maybe_real_dtype_from_complex(np.complex64) == np.float32
    assert jaxmg.utils.maybe_real_dtype_from_complex(np.float64) == np.float64
    assert issubclass(jaxmg.utils.JaxMgWarning, UserWarning)


@pytest.mark.parametrize("shard,tile,pad", [(0, 4, 0), (8, 4, 0), (9, 4, 3), (1, 1, 0),
                                            (300, 128, 84), (np.int64(5), 8, 3), (2**40 + 1, 2**20, 2**20 - 1)])
def test_calculate_padding(shard, tile, pad):
    got = jaxmg.calculate_padding(shard, tile)
    assert got == pad and isinstance(got, int)
    assert (shard + got) % tile == 0 and 0 <= got < tile
    assert jaxmg.utils.calculate_padding is jaxmg.calculate_padding


@pytest.mark.parametrize("shard,tile,err", [(-1, 4, ValueError), (4, 0, ValueError),
                                            (4.0, 4, TypeError), (4, True, TypeError),
                                            (4, None, TypeError)])
def test_calculate_padding_bad(shard, tile, err):
    with pytest.raises(err, match="calculate_padding"):
        jaxmg.calculate_padding(shard, tile)
