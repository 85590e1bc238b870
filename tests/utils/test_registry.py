import pytest

from prodrec.utils import ProdrecError, Registry


def test_register_get_and_list():
    registry = Registry("search backend", {"exact": "E"})

    @registry.register("faiss")
    def faiss_backend():
        return "F"

    assert registry.get("faiss") is faiss_backend and registry["exact"] == "E"
    assert sorted(registry) == ["exact", "faiss"] and len(registry) == 2 and "faiss" in registry
    assert dict(registry) == {"exact": "E", "faiss": faiss_backend}
    assert repr(registry) == "Registry('search backend', ['exact', 'faiss'])"


def test_unknown_and_repeated_names_are_refused():
    registry = Registry("loss", {"CELoss": 1})
    with pytest.raises(ProdrecError, match=r"unknown loss 'CE'; choose one of \['CELoss'\]"):
        registry.get("CE")
    with pytest.raises(KeyError):
        registry["CE"]  # the plain mapping look-up stays a KeyError
    with pytest.raises(ProdrecError, match="loss 'CELoss' is registered already"):
        registry.register("CELoss", 2)
    assert registry["CELoss"] == 1
