"""The paper's own words that the claims ledger judges (issue 17).

Every ledger row carries a ``paper`` field: the statement of the paper it
judges, quoted verbatim from the paper's text (``../shared/seeds``) and
prefixed by where it is (``Abstract: "..."``, ``Theorem 5.1 (Section 5):
"..."``), or, for a reading that is ours and not the paper's (the sharp
Gaussian laws, the REM scaling, adversarial search, real-model checks), a text
that says so: ``Ours (not in the paper): ...``. The extraction of the paper
lost every formula; a lost formula inside a quote is written ``GAP``, never
guessed. ``tests/test_ledger_paper.py`` checks each quote against the text.
"""

from __future__ import annotations

GAP = "[formula lost in extraction]"
OURS = "Ours (not in the paper)"


def quote(where: str, *words: str) -> str:
    """``where: "words"``; several pieces of one sentence are joined by ``GAP``
    (a formula the extraction lost between them)."""
    return f'{where}: "{GAP.join(words)}"'


def ours(reading: str, relates: str | None = None) -> str:
    """A reading of ours, marked as such, and the paper statement it relates to."""
    return f"{OURS}: {reading}" + (f"; it relates to {relates}" if relates else "")


def joined(*fields: str) -> str:
    """Several paper fields of one row (e.g. a NOT RUN row standing for several claims)."""
    return "; ".join(dict.fromkeys(fields))


TITLE = quote("Title", "Your Attention is Naturally ", "-Sparse")
ABSTRACT_NC = quote("Abstract", "Attention is ", "-sparse, implying that considering only the largest ",
                    " entries out of all ", " entries is sufficient for sparse attention to approximate the "
                    "exact attention matrix with decreasing loss.")
ABSTRACT_LOG = quote("Abstract", "Stable ", "-sparse attention, which approximates attention computation with ",
                     " or fewer entries, may not be feasible since the error will persist at a minimum of ", ".")
LEMMA42 = quote("Lemma 4.2 (Section 4.1; its Parts 1-3 were lost in extraction)", "Let ",
                " be defined as Definition 4.1. ", ". Then with a probability at least ", ", we have")
THEOREM43 = quote("Theorem 4.3 (Section 4.2; statement lost in extraction, the gloss after it)",
                  "Theorem 4.3 gives the relationship between attention sparsity and the error of approximating "
                  "attention computation by considering only top-", " entries in attention.")
THEOREM51 = quote("Theorem 5.1 (Section 5's gloss; its formulas were lost in extraction)",
                  "the number of effective entries, whose values are bigger than ", ", in each row of attention "
                  "matrix, will inevitably decrease to 1 or some constant due to a considerable large input "
                  "length ", ".")
FIGURE1 = quote("Figure 1 (Section 5)", "For different ", ", ", " inevitably decreases to 0.")
THEOREM61 = quote("Theorem 6.1 (Section 6.1)", "For a constant ", ", we then denote ",
                  ", therefore, with a probability at least ", ", window size strategy ",
                  " is sufficient to solve ", " in Definition 3.5.")
STABLE = quote("Definition 3.5 (Section 3.2)", "We say this sparse attention approximation is stable iff: ",
               " is monotonically decreasing with growing ", ".")
THEOREM62 = quote("Theorem 6.2 (Section 6.2)", "For a constant ", ", we then denote ",
                  ", therefore, with a probability at least ", ", window size strategy ",
                  " cannot solve ", " in Definition 3.5.")
THEOREM62_SKETCH = quote("Theorem 6.2 (its proof sketch, Section 6.2)", "This proof follows from choosing ",
                         " as Frobenius norm and ", ", the error function then will be at least monotonically "
                         "increasing with ", ".")
TABLE1 = quote("Table 1 (Section 6.3)", "the constant window size strategy performs well, and the ",
               " strategy performs with minimal error, which indicates the dynamic strategy for the window "
               "size might be a better choice for the design of advanced sparse attention approaches.")
CLAIM71 = quote("Claim 7.1 (Section 7.1)", "Choosing the constant window size strategy ",
                " for some constant integer ", ". The computational complexity of a one-layer ",
                "-sparse attention to inference is ", ".")
ALIGNED_COST = quote("Section 6.3", "we adjust ", " to enforce the computational cost is aligned to the cost "
                     "when applying fixed window size.")
PROPOSITION72 = quote("Proposition 7.2 (Section 7.1)", "For any window size strategy ",
                      " for some constant integer ", ", there exist a context-length adaptive strategy ",
                      " for some constant ", " that performs lower approximating error.")
TABLE2 = quote("Table 2 (Section 7.2)", "the dynamic window size strategy showcases a strong approximating "
               "capability that compares with the fixed window size strategy under the settings ", " and ", ".")
SECTION72_SETUP = quote("Section 7.2", "we use the pre-trained model LlaMa-3-8B-Instruct as the backbone of this "
                        "experiment and we evaluate on the LongBench dataset [BLZ+23].")
