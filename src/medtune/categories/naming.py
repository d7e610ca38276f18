"""Names of clusters: each category's top terms by class-based TF-IDF (c-TF-IDF, as BERTopic defines it).

A cluster number says nothing to a reader; its most distinctive words do. Clinical vignettes share a lot of
boilerplate ("a 45-year-old man presents to the emergency department"), so those words are left out too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Words every clinical vignette uses ("A 45-year-old man presents to the emergency department ... Which of
# the following is the most likely ...") and lab units: extra stop words so cluster names carry the topic.
VIGNETTE_STOP_WORDS = frozenset(
    {
        "patient", "patients", "year", "years", "old", "man", "woman", "boy", "girl", "male", "female", "child",
        "infant", "following", "likely", "presents", "presented", "comes", "brought", "history", "examination",
        "physician", "department", "emergency", "shows", "showed", "day", "days", "week", "weeks", "month",
        "months", "hour", "hours", "minute", "minutes", "min", "mm", "hg", "dl", "mg", "ml", "kg", "cm", "mmol",
        "meq", "ul", "mcg", "iu", "normal", "temperature", "pulse", "respirations", "blood", "pressure",
        "laboratory", "studies", "appropriate", "management", "step", "best", "diagnosis", "treatment",
        "explanation", "finding", "findings",
    }
)


def ctfidf_terms(texts: Sequence[str], labels: Sequence[Any], top_n: int = 4) -> dict[Any, list[str]]:
    """Top ``top_n`` terms per class by c-TF-IDF as BERTopic defines it: the class's documents joined into
    one, term frequencies L1-normalised per class, weighted by log(1 + A / f_t) where A is the average
    number of words per class and f_t the term's frequency over all classes. The vocabulary leaves out
    English and vignette stop words and (with three or more classes) terms that every class uses."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer
    from sklearn.preprocessing import normalize

    classes = sorted(set(labels), key=str)
    docs = [" ".join(t for t, lab in zip(texts, labels, strict=True) if lab == c) for c in classes]
    vectorizer = CountVectorizer(stop_words=sorted(ENGLISH_STOP_WORDS | VIGNETTE_STOP_WORDS),
                                 token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b")
    try:
        counts = vectorizer.fit_transform(docs)
    except ValueError:  # no usable words at all
        return {c: [] for c in classes}
    terms = vectorizer.get_feature_names_out()
    if len(classes) >= 3:  # a term used by every class names none of them (max_df < 1 in vectorizer terms)
        keep = np.flatnonzero(np.asarray((counts > 0).sum(axis=0)).ravel() < len(classes))
        if keep.size:
            counts, terms = counts[:, keep], terms[keep]
    freq = np.asarray(counts.sum(axis=0)).ravel()
    avg_words = float(counts.sum(axis=1).mean())
    idf = np.log(1.0 + avg_words / np.maximum(freq, 1))
    scores = normalize(counts, norm="l1", axis=1).multiply(idf).tocsr()
    out: dict[Any, list[str]] = {}
    for row, c in enumerate(classes):
        r = scores.getrow(row).toarray().ravel()
        top = [j for j in np.argsort(-r, kind="stable")[:top_n] if r[j] > 0]
        out[c] = [str(terms[j]) for j in top]
    return out
