import pytest

faiss = pytest.importorskip("faiss")

from prodrec.retrieval import check_index_type, faiss_message, new_faiss_index, search_knob  # noqa: E402


@pytest.mark.parametrize("name", ["Flat", "HNSW32", "HNSW8", "IVF1024,Flat", "IVF16,PQ8"])
def test_supported_names(name):
    assert check_index_type(name, 32) == name
    index = new_faiss_index(32, name, "ip")
    assert index.d == 32 and index.metric_type == faiss.METRIC_INNER_PRODUCT


@pytest.mark.parametrize("name", ["LSH", "IVF0,Flat", "HNSW", "Flat,IVF4", "IVF4,PQ4x4", "IDMap2,Flat", "flat", 3])
def test_unknown_names_list_the_supported_forms(name):
    with pytest.raises(ValueError, match=r"unknown index_type .*supported: Flat .*HNSW\{M\}.*IVF\{nlist\},PQ\{m\}"):
        check_index_type(name, 32)


def test_pq_needs_m_to_divide_the_dimension():
    with pytest.raises(ValueError, match="PQ5 needs a feature dimension divisible by 5, but it is 32"):
        check_index_type("IVF8,PQ5", 32)


def test_id_map_wraps_flat_and_hnsw_but_not_ivf():
    assert isinstance(new_faiss_index(8, "Flat", "l2"), faiss.IndexIDMap2)
    assert isinstance(new_faiss_index(8, "HNSW16", "l2"), faiss.IndexIDMap2)
    ivf = faiss.downcast_index(new_faiss_index(8, "IVF4,PQ2", "l2"))
    assert isinstance(ivf, faiss.IndexIVFPQ) and not ivf.do_polysemous_training
    assert search_knob(new_faiss_index(8, "HNSW16", "l2"), "HNSW16", "HNSW").efSearch == 16  # faiss's default
    with pytest.raises(ValueError, match="applies to IVF indexes; this one is HNSW16"):
        search_knob(new_faiss_index(8, "HNSW16", "l2"), "HNSW16", "IVF")


def test_faiss_message_drops_the_cpp_location():
    index = faiss.index_factory(8, "IVF64,Flat")
    with pytest.raises(RuntimeError) as caught:
        index.train(faiss.rand((10, 8)))
    assert faiss_message(caught.value) == ("Number of training points (10) should be at least as large as "
                                           "number of clusters (64)")
    assert faiss_message(RuntimeError("plain")) == "plain"
