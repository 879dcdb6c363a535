import numpy as np
import pytest

from weighter.evaluation import (SetTruth, calibrate_threshold, diarization_error, distinct_active, equal_error_rate,
                                 linking_f1,
                                 pair_calibration, read_rttm, recall_at_k, retrieval_map, slot_eer)


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def item(vectors, likes, conf=None, x=None, activity=None):
    vectors = unit(vectors)
    conf = np.ones(len(vectors), np.float32) if conf is None else np.asarray(conf, np.float32)
    x = np.zeros((len(vectors), 4), np.float32) if x is None else np.asarray(x, np.float32)
    return SetTruth(vectors, conf, x, tuple(likes), activity)


def test_equal_error_rate():
    assert equal_error_rate(np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.2, 0.3])) == 0.0
    assert equal_error_rate(np.array([0.1, 0.2]), np.array([0.8, 0.9])) == 1.0
    assert equal_error_rate(np.array([0.6, 0.4]), np.array([0.5, 0.3])) == pytest.approx(0.5)


def test_map_perfect_and_reversed():
    a, b = [1, 0, 0], [0, 1, 0]
    items = [item([a], ["x"]), item([a], ["x"]), item([b], ["y"]), item([b], ["y"])]
    assert retrieval_map(items, 0.5) == 1.0
    assert recall_at_k(items, 0.5, 1) == 1.0
    wrong = [item([a], ["x"]), item([b], ["x"]), item([a], ["y"]), item([b], ["y"])]
    # the relevant file ranks 2nd, 2nd, 3rd and 3rd (ties keep file order): (1/2 + 1/2 + 1/3 + 1/3) / 4
    assert retrieval_map(wrong, 0.5) == pytest.approx(5 / 12)


def test_count_threshold_calibration():
    items = [item([[1, 0], [0, 1]], ["a", "b"], conf=[0.9, 0.7]), item([[1, 0], [0, 1]], ["a"], conf=[0.9, 0.3])]
    thr, acc, _ = calibrate_threshold(items, merge_grid=(None,))
    assert acc == 1.0 and 0.3 < thr <= 0.7


def test_alike_active_slots_count_once():
    emb = unit([[1, 0, 0], [0.98, 0.2, 0], [0, 1, 0]])
    conf = np.array([0.9, 0.8, 0.7], np.float32)
    assert distinct_active(conf, emb, 0.5).tolist() == [0, 1, 2]
    assert distinct_active(conf, emb, 0.5, merge_cosine=0.9).tolist() == [0, 2]  # slot 1 repeats slot 0
    items = [item(emb, ["a", "b"], conf=conf), item(emb[[0, 2]], ["a", "b"], conf=conf[[0, 2]])]
    thr, acc, merge = calibrate_threshold(items)
    assert acc == 1.0 and merge is not None and merge > 0.2


def test_slot_eer_uses_rttm_overlap_to_name_slots():
    act = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool)
    x = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], np.float32)
    items = [item([[1, 0, 0], [0, 1, 0]], ["s1", "s2"], x=x, activity=act),
             item([[0.9, 0.1, 0], [0.1, 0.9, 0]], ["s1", "s2"], x=x, activity=act),
             item([[0, 0, 1]], ["s3"], x=x[:1], activity=act[:1])]
    assert slot_eer(items, 0.5) == 0.0


def test_linking_f1():
    assert linking_f1([{1}, {1}, {2}], [{"a"}, {"a"}, {"b"}]) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    half = linking_f1([{1}, {1}, {1}], [{"a"}, {"a"}, {"b"}])
    assert half["recall"] == 1.0 and half["precision"] == pytest.approx(1 / 3, abs=1e-3)


def test_der_perfect_missed_and_false_alarm():
    act = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool)
    perfect = item([[1, 0], [0, 1]], ["a", "b"], x=act.astype(np.float32), activity=act)
    assert diarization_error([perfect], 0.5) == 0.0
    one_slot = item([[1, 0]], ["a", "b"], x=act[:1].astype(np.float32), activity=act)
    assert diarization_error([one_slot], 0.5) == pytest.approx(0.5)  # b's 2 frames missed of 4
    extra = item([[1, 0], [0, 1], [1, 1]], ["a", "b"], x=np.vstack([act, [[1, 1, 1, 1]]]).astype(np.float32),
                 activity=act)
    assert diarization_error([extra], 0.5) == pytest.approx(1.0)  # 4 false-alarm frames over 4 of speech


def test_pair_calibration_is_increasing():
    rng = np.random.default_rng(0)
    items = []
    for i in range(30):
        spk = i % 5
        v = np.eye(8)[spk] + rng.normal(0, 0.3, 8)
        items.append(item([v], [f"s{spk}"]))
    a, b = pair_calibration(items, 0.5)
    assert a > 0
    assert pair_calibration(items[:1] * 3, 0.5) is None  # one class only


def test_read_rttm(tmp_path):
    path = tmp_path / "r.rttm"
    path.write_text("SPEAKER f1 1 0.500 1.250 <NA> <NA> alice <NA> <NA>\nSPEAKER f1 1 2.0 1.0 <NA> <NA> bob <NA> <NA>\n")
    assert read_rttm(path) == {"f1": [(0.5, 1.75, "alice"), (2.0, 3.0, "bob")]}
    path.write_text("SPEAKER f1 1 zero\n")
    with pytest.raises(Exception, match="line 1"):
        read_rttm(path)


def test_pair_calibration_prior_moves_only_the_intercept():
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(4, 8)))
    items = [item([centres[k] + rng.normal(0, 0.4, 8)], [f"s{k}"]) for k in rng.integers(0, 4, 40)]
    a, b = pair_calibration(items, 0.5)
    a2, b2 = pair_calibration(items, 0.5, prior=0.03)
    same = np.mean([set(x.likes) & set(y.likes) != set() for i, x in enumerate(items) for y in items[i + 1:]])
    assert a2 == a
    assert b2 - b == pytest.approx(np.log(0.03 / 0.97) - np.log(same / (1 - same)), abs=2e-4)
    assert b2 < b  # these 4 speakers share far more often than 3% of pairs
