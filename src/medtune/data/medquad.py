"""MedQuAD (Ben Abacha & Demner-Fushman 2019): the published XML documents as free-text QA pairs.

One XML file per document: a root ``<Document id source url>`` (a few files use ``<DiseaseFile fid ...>``
instead), ``<Focus>``, ``<UMLS>`` (``CUI``, ``SemanticType``, ``SemanticGroup``) and ``<QAPairs>`` of
``<QAPair pid>`` each holding ``<Question qid qtype>`` and ``<Answer>``. Each QA pair becomes a
:class:`QAItem`.

``path`` is one XML file, one collection folder (e.g. ``1_CancerGov_QA``), or a folder of collections
(searched recursively, in sorted order). ``category`` is, by default (``category="collection"``), the
collection's name without its number and ``_QA`` suffix (``1_CancerGov_QA`` → ``CancerGov``; for a file
outside such a folder, the root's ``source`` attribute). With ``category="semantic_group"`` it is the
document's UMLS semantic group when the document has one (CancerGov fills it, with "Disorders" for nearly
every document; CDC leaves it empty), else the collection. The collection is the default because it is
always present and means the same thing for every document; mixing "Disorders" with "CDC" would not.
``meta`` keeps ``qtype``, ``focus``, ``qid``, the document id and URL, the collection and the UMLS fields
(``UMLS`` sits at the root or inside ``FocusAnnotations``, with one or several CUIs and semantic types).

Answers: some collections were published with their answers removed (copyright). A QA pair whose answer is
empty is an error, or, with ``on_error="skip"``, skipped and reported. A file that is not MedQuAD (a root
element other than the two above) is an error naming the file. Ids are
``medquad-<collection>-<file stem>-<pid>``: the source's ``qid`` is not unique (``0000013_2.xml`` and
``0000013_2_1.xml`` carry the same document id and qids for different diseases), the file name is.
Split: MedQuAD has none; every item gets ``split`` (default "train").

Parsing uses the standard library's expat-based parser, which does not fetch external entities and (expat
>= 2.4) limits entity expansion.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Literal

from medtune.data.parsing import UniqueIds, merge_results
from medtune.data.registry import LoadResult, OnError, RecordCollector, read_text_utf8, register_loader
from medtune.errors import InputError
from medtune.schema import QAItem, make_item

SOURCE = "medquad"
ROOTS = ("Document", "DiseaseFile")
_COLLECTION = re.compile(r"^\d+_(?P<name>.+?)(?:_QA)?$")


def collection_name(path: Path, root: ET.Element) -> str:
    m = _COLLECTION.match(path.parent.name)
    if m:
        return m["name"]
    return root.get("source") or path.parent.name or "MedQuAD"


def _parse(path: Path) -> ET.Element:
    text = read_text_utf8(path)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        line = exc.position[0] if exc.position else None
        raise InputError(f"malformed XML ({exc})", file=path, record=line, record_kind="line") from None
    if root.tag not in ROOTS:
        raise InputError(f"not a MedQuAD document: root element <{root.tag}>, expected <Document>", file=path)
    return root


def _text(el: ET.Element | None) -> str:
    return "".join(el.itertext()).strip() if el is not None else ""


def _build(pair: ET.Element, n: int, doc: dict[str, Any], category: str, split: str, ids: UniqueIds) -> QAItem:
    qel = pair.find("Question")
    if qel is None:
        raise InputError("missing", field="Question")
    question = _text(qel)
    if not question:
        raise InputError("question is empty", field="Question")
    answer = _text(pair.find("Answer"))
    if not answer:
        raise InputError("answer is empty", field="Answer")
    pid = pair.get("pid") or str(n)
    item_id = f"{SOURCE}-{doc['collection']}-{doc['file']}-{pid}"
    ids.claim(item_id, f"{doc['file']} QAPair {pid}", field="pid")
    meta = {**doc, "qid": qel.get("qid"), "pid": pid, "qtype": qel.get("qtype")}
    return make_item(
        QAItem,
        {"id": item_id, "question": question, "answer": answer, "source": SOURCE, "split": split,
         "category": category, "meta": meta},
    )


def _load_file(path: Path, on_error: OnError, split: str, category_from: str, ids: UniqueIds) -> LoadResult:
    root = _parse(path)
    collection = collection_name(path, root)
    group = _text(root.find(".//UMLS/SemanticGroup")) or None
    doc: dict[str, Any] = {
        "file": path.stem,
        "document_id": root.get("id") or root.get("fid"),
        "url": root.get("url"),
        "collection": collection,
        "focus": _text(root.find("Focus")) or None,
        "cuis": [t for el in root.iterfind(".//UMLS//CUI") if (t := _text(el))],
        "semantic_types": [t for el in root.iterfind(".//UMLS//SemanticType") if (t := _text(el))],
        "semantic_group": group,
    }
    category = (group or collection) if category_from == "semantic_group" else collection
    pairs = root.findall("./QAPairs/QAPair")
    collector = RecordCollector(path, on_error, record_kind="QAPair")
    for n, pair in enumerate(pairs, start=1):
        collector.run(pair.get("pid") or n, lambda p=pair, n=n: _build(p, n, doc, category, split, ids))
    return collector.result()


@register_loader("medquad", options=(),
                 description="MedQuAD XML documents (a file, a collection folder or a folder of them)")
def load_medquad(
    path: Path,
    *,
    on_error: OnError = "raise",
    split: str | None = None,
    category: Literal["collection", "semantic_group"] = "collection",
    **options: Any,
) -> LoadResult:
    """Load MedQuAD XML as free-text QA items; category from the collection (or the UMLS semantic group)."""
    if options:
        raise InputError(f"unknown option(s) for medquad: {', '.join(sorted(options))}")
    if category not in ("collection", "semantic_group"):
        raise InputError(f"category must be 'collection' or 'semantic_group', got {category!r}", field="category")
    path = Path(path)
    files = sorted(path.rglob("*.xml")) if path.is_dir() else [path]
    if not files:
        raise InputError("no .xml files in this folder", file=path)
    ids = UniqueIds()
    return merge_results(_load_file(f, on_error, split or "train", category, ids) for f in files)
