"""Detection classifiers: shapes, losses, and labelling proposals (HACS top-k, EK100 verb x noun pairs)."""
import numpy as np
import torch

from localization.classify import (
    SnippetClassifier,
    snippet_detections,
    VideoClassifier,
    ek100_detections,
    hacs_detections,
    pool_in_segments,
)


def test_video_classifier_learns_a_pooled_signal():
    torch.manual_seed(0)
    x = torch.randn(12, 8, 16) * 0.3
    labels = torch.arange(12) % 3
    x[torch.arange(12), labels, 4:9] += 1.0  # class c: channel c active for a while
    target = torch.nn.functional.one_hot(labels, 3).float()
    model = VideoClassifier(8, 3, hidden_dim=16, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = {"video_label": target}
    first = VideoClassifier.loss(model(x), batch).item()
    for _ in range(60):
        loss = VideoClassifier.loss(model(x), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    probs = VideoClassifier.probabilities(model(x))
    assert probs.shape == (12, 3) and torch.allclose(probs.sum(1), torch.ones(12))
    assert (probs.argmax(1) == labels).all()


def test_video_classifier_loss_ignores_videos_without_segments():
    logits = torch.tensor([[2.0, 0.0], [5.0, -5.0]])
    target = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    expected = -torch.log_softmax(logits[0], 0)[1]
    assert torch.isclose(VideoClassifier.loss(logits, {"video_label": target}), expected)


def test_snippet_classifier_shapes_and_masked_loss():
    model = SnippetClassifier(8, {"verb": 4, "noun": 6}, hidden_dim=16)
    x = torch.randn(2, 8, 10)
    out = model(x)
    verb, noun = out["verb"], out["noun"]
    assert verb.shape == (2, 5, 10) and noun.shape == (2, 7, 10)
    valid = torch.ones(2, 10, dtype=torch.bool)
    valid[1, 7:] = False
    batch = {"valid": valid, "verb": torch.randint(0, 5, (2, 10)), "noun": torch.randint(0, 7, (2, 10))}
    batch["verb"][1, 7:] = 99  # invalid bins may hold anything: they are masked out
    loss = SnippetClassifier.loss(out, batch)
    flat_v = verb.transpose(1, 2)[valid]
    flat_n = noun.transpose(1, 2)[valid]
    want = 0.5 * (torch.nn.functional.cross_entropy(flat_v, batch["verb"][valid])
                  + torch.nn.functional.cross_entropy(flat_n, batch["noun"][valid]))
    assert torch.isclose(loss, want)


def test_hacs_detections_top_k_scores():
    proposals = np.array([[1.0, 4.0, 0.5], [6.0, 9.0, 0.8]])
    probs = np.array([0.1, 0.6, 0.3])
    dets = hacs_detections(proposals, probs, ["a", "b", "c"], top_k=2)
    assert len(dets) == 4
    assert dets[0] == {"label": "b", "score": 0.8 * 0.6, "segment": [6.0, 9.0]}
    assert [d["label"] for d in dets] == ["b", "b", "c", "c"]
    assert np.allclose([d["score"] for d in dets], [0.48, 0.3, 0.24, 0.15])


def test_pool_in_segments_matches_a_loop():
    rng = np.random.default_rng(0)
    probs = rng.random((20, 3))
    centers = (np.arange(20) + 0.5) * 0.5
    segments = np.array([[0.0, 10.0], [1.1, 3.9], [2.3, 2.4], [9.9, 12.0]])
    got = pool_in_segments(probs, centers, segments)
    for k, (s, e) in enumerate(segments):
        inside = (centers >= s) & (centers <= e)
        want = probs[inside].mean(0) if inside.any() else probs[np.argmin(np.abs(centers - (s + e) / 2))]
        np.testing.assert_allclose(got[k], want)


def test_ek100_detections_pick_best_verb_noun_pairs():
    centers = (np.arange(10) + 0.5) * 1.0
    verb = np.full((10, 4), 0.01)  # 3 verbs + background
    noun = np.full((10, 3), 0.01)  # 2 nouns + background
    verb[:5, 2], verb[5:, 0] = 0.9, 0.9
    noun[:, 1] = 0.6
    noun[:, 0] = 0.3
    verb[:, 3] = noun[:, 2] = 0.5  # background mass is ignored
    proposals = np.array([[0.0, 5.0, 0.7], [5.0, 10.0, 0.4]])
    dets = ek100_detections(proposals, verb, noun, centers, top_k=2)
    assert len(dets) == 4
    first = dets[0]
    assert (first["verb"], first["noun"], first["action"], first["segment"]) == (2, 1, "2,1", [0.0, 5.0])
    pv = 0.9 / (0.9 + 0.02)
    pn = 0.6 / 0.9
    assert np.isclose(first["score"], 0.7 * pv * pn)
    assert {(d["verb"], d["noun"]) for d in dets if d["segment"] == [5.0, 10.0]} == {(0, 1), (0, 0)}
    assert all(isinstance(d["verb"], int) and isinstance(d["noun"], int) for d in dets)
    assert ek100_detections(np.zeros((0, 3)), verb, noun, centers, top_k=2) == []


def test_snippet_detections_pool_the_bins_inside_each_proposal():
    centers = np.arange(6) + 0.5  # bins [0,1), [1,2), ...
    probs = np.zeros((6, 3))  # classes a, b, background
    probs[:3] = [0.6, 0.2, 0.2]
    probs[3:] = [0.1, 0.5, 0.4]
    proposals = np.array([[0.0, 3.0, 0.5], [3.0, 6.0, 1.0]])
    dets = snippet_detections(proposals, probs, centers, ["a", "b"], top_k=1)
    # first proposal pools bins 0-2: a 0.6/0.8 = 0.75; second bins 3-5: b 0.5/0.6
    assert [(d["label"], d["segment"]) for d in dets] == [("b", [3.0, 6.0]), ("a", [0.0, 3.0])]
    np.testing.assert_allclose([d["score"] for d in dets], [0.5 / 0.6, 0.5 * 0.75])
