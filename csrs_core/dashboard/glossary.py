"""The words the dashboard uses, each with one meaning: the glossary page and the first-visit guide."""
from __future__ import annotations

import streamlit as st

GLOSSARY = {
    "cost matrix": "A grid of true class (row) × predicted class (column). A non-zero cell is a costly mistake and "
                   "says how much it costs; the diagonal (a correct prediction) never costs. Written in one grammar "
                   "everywhere: `overall` (every mistake costs 1), `seedwise:3` (every mistake on a true class 3), "
                   "`seedwise:0,1=10` (mistakes on class 0 cost 1, on class 1 cost 10), `pairwise:3>5` (a true 3 "
                   "predicted as 5), `pairwise:1>0=10;0>1` (two entries with their costs), `none`.",
    "sensitive example": "An example whose true class has at least one costly mistake in its row of the cost "
                         "matrix. Rob_cs, Rob_std and the cost-sensitive radius are about sensitive examples only.",
    "Ω_y (omega)": "The costly predicted classes of true class y: the non-zero cells of row y.",
    "ε (epsilon)": "The size of the perturbation guarded against: an ℓ2 norm in pixel units of the image scaled to "
                   "[0, 1], at the size the model sees.",
    "σ (sigma)": "The standard deviation of the Gaussian noise of randomized smoothing; fixed when a model is "
                 "trained and certified.",
    "Rob_cs(ε)": "Certified cost-sensitive robustness: the share of the sensitive examples for which no perturbation "
                 "of size ε can make the smoothed classifier predict a costly class (their cost-sensitive radius "
                 "exceeds ε). It does not require the prediction to be correct.",
    "Rob_std(ε)": "The share of the sensitive examples that the standard certificate predicts correctly with a radius "
                  "above ε.",
    "Rob_non(ε)": "The same share for the non-sensitive examples.",
    "certified accuracy": "The share of all test examples that the standard certificate predicts correctly with a "
                          "radius R1 above ε (Cohen et al.). Rob_cs under the `overall` matrix.",
    "Acc": "The share of all test examples that the smoothed classifier's certificate predicts correctly (ε = 0).",
    "certified expected cost": "The mean over all test examples of the largest cost that a perturbation of size ε "
                               "could force (0 where nothing costly can be reached). Lower is better; for a 0/1 "
                               "matrix it is (1 − Rob_cs) times the share of sensitive examples.",
    "Rob_cs(ε, τ)": "The share of sensitive examples whose certified worst-case cost at ε is at most τ.",
    "R1": "The standard radius σ·Φ⁻¹(p̲_A) from the lower confidence bound p̲_A of the top class's probability.",
    "R2": "The cost-sensitive term (σ/2)·(Φ⁻¹(p̲_A) − Φ⁻¹(p̄_B)), p̄_B an upper bound on the probability of the most "
          "likely costly class. The cost-sensitive radius is max(R1, R2) when the top class is not costly; R2 "
          "exceeds R1 whenever the costly classes' bounds stay below 1 − p̲_A.",
    "sound mode": "The top class's bound at α/2 and the costly classes' at α/(2|Ω_y|), so that every certificate "
                  "holds with probability ≥ 1 − α; the radius is max(R1(α/2), R2).",
    "paper mode": "Radii as the paper's Algorithm 1 prints them (R1 at α): each holds with probability ≥ 1 − 1.5α.",
    "α (alpha)": "The failure probability of a certificate: the chance that its confidence bounds are wrong.",
    "n0, n": "The Monte Carlo budget per example: n0 noisy copies select the top class, n more estimate its "
             "probability. In every table, n is this budget; counts of test images are called examples.",
    "abstain": "The certificate declines to predict (p̲_A ≤ 1/2): no class is certified for that example.",
    "ACR": "Average certified radius (MACER's headline): the mean over all examples of R1 where the standard "
           "certificate is correct, 0 elsewhere.",
    "paired test (McNemar)": "Two checkpoints certified on the same examples: an exact test on the examples where "
                             "exactly one of them succeeds; p_*_holm adjusts the p-values for the comparisons made.",
    "sequential certification": "Decide at chosen ε with as few samples as each example needs: sampling stops once "
                                "every ε is decided (confidence sequences keep the guarantee at ≥ 1 − α); n is "
                                "then the cap.",
    "baseline": "The checkpoint every other one is compared with in the paired tests (the case's Cohen model unless "
                "the case or the user names another).",
}

GUIDE = (
    "**New here?** A **cost matrix** (the grid below, true class → predicted class) says which mistakes cost and "
    "how much. For each checkpoint, **Rob_cs(ε)** is the share of the *sensitive* examples (whose true class has a "
    "costly mistake) that no perturbation of size ε can push into a costly class, and the **certified expected "
    "cost** is the mean cost a perturbation could force. **Sound mode** gives certificates that hold with "
    "probability ≥ 1 − α; paper mode follows the paper's printed algorithm (≥ 1 − 1.5α). **Start** by reading the "
    "metrics table, then click cells of the grid to ask another question: nothing is resampled. The Examples page "
    "shows single images, Certify and Train make new records and models. Every term: the Glossary page."
)


def first_visit_guide() -> None:
    """The guide, until the user dismisses it (for the session)."""
    if st.session_state.get("guide_dismissed"):
        return
    with st.container(border=True):
        st.markdown(GUIDE)
        st.button("Got it", key="guide_dismiss", on_click=lambda: st.session_state.update(guide_dismissed=True))
