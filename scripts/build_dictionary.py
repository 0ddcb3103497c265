"""Compile the project's concept dictionary, ``pipelines/data/concepts.tsv``.

    python scripts/build_dictionary.py [--output PATH] [--check] [--articles 50] [--sample DIR]

The concepts below are written by the project (no UMLS data): every biomedical term
that ``pipelines/corpus.py`` generates, plus common biomedical terms of CORD-19-like
text (virus, protein, infection, cell, ...) so that real articles produce edges too.
Ids are made up, of the form ``C9`` + 6 digits (the shape of a UMLS CUI, outside its
range), and written in the table so that they stay stable when concepts are added:
give a new concept the next free id, never reuse or renumber one.

Terms are matched case-insensitively on whole words (``gears_pipelines.nlp.concepts``), and
in the pipeline they are matched on spell-corrected sentences: symspellpy turns
``coronavirus`` into ``corona virus`` and ``cytokine`` into ``cytokines``, hence the
variants. Terms shorter than 4 characters (``RNA``, ``DNA``, ``PCR``) are skipped by
the matcher, so the table uses longer phrases for them (``viral rna``, ``rt-pcr``).

``--check`` runs the generated corpus (and, with ``--sample``, a folder of CORD-19 JSON
files) through split -> correct -> match and prints how many sentences yield pairs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUTPUT = ROOT / "pipelines" / "data" / "concepts.tsv"
ID_PATTERN = re.compile(r"^C9\d{6}$")

#: (concept id, canonical name, terms). The first block covers pipelines/corpus.py.
CONCEPTS: list[tuple[str, str, list[str]]] = [
    # -- the generated corpus (pipelines/corpus.py) --------------------------------
    ("C9000001", "SARS-CoV-2", ["sars-cov-2", "sars cov 2", "sars-cov2", "2019-ncov", "covid-19", "covid 19",
                                "covid19", "coronavirus", "corona virus", "coronaviruses", "corona viruses"]),
    ("C9000002", "Severe acute respiratory syndrome", ["sars", "sars-cov", "sars cov", "sars coronavirus",
                                                       "severe acute respiratory syndrome"]),
    ("C9000003", "Spike protein", ["spike protein", "spike proteins", "spike glycoprotein", "spike glycoproteins",
                                   "s protein", "spike"]),
    ("C9000004", "Viral replication", ["viral replication", "virus replication", "replication of the virus"]),
    ("C9000005", "Immune response", ["immune response", "immune responses", "immune reaction", "host response"]),
    ("C9000006", "Respiratory tract infection", ["respiratory infection", "respiratory infections",
                                                 "respiratory tract infection", "respiratory tract infections"]),
    ("C9000007", "Host cell", ["host cell", "host cells"]),
    ("C9000008", "Antibody", ["antibody", "antibodies", "immunoglobulin", "immunoglobulins"]),
    ("C9000009", "Antibody titer", ["antibody level", "antibody levels", "antibody titer", "antibody titers",
                                    "antibody titre", "antibody titres"]),
    ("C9000010", "Clinical outcome", ["clinical outcome", "clinical outcomes", "patient outcome", "patient outcomes"]),
    ("C9000011", "Lung tissue", ["lung tissue", "lung tissues", "pulmonary tissue"]),
    ("C9000012", "Vaccine candidate", ["vaccine candidate", "vaccine candidates", "candidate vaccine",
                                       "candidate vaccines"]),
    ("C9000013", "Vaccine", ["vaccine", "vaccines", "vaccination", "immunization", "immunisation"]),
    ("C9000014", "Interferon signaling", ["interferon signalling", "interferon signaling", "ifn signalling",
                                          "ifn signaling", "interferon response"]),
    ("C9000015", "Interferon", ["interferon", "interferons"]),
    ("C9000016", "Viral genome", ["viral genome", "viral genomes", "virus genome", "genomic rna", "viral rna"]),
    ("C9000017", "Pneumonia", ["pneumonia", "pneumonias"]),
    ("C9000018", "Inflammation", ["inflammation", "inflammatory response", "inflammatory responses"]),
    ("C9000019", "Airway", ["airway", "airways", "respiratory tract", "airway epithelium"]),
    ("C9000020", "Disease severity", ["severity of disease", "disease severity", "severity of illness",
                                      "severe disease"]),
    ("C9000021", "Disease", ["disease", "diseases", "illness", "illnesses"]),
    ("C9000022", "Receptor binding", ["receptor binding", "receptor-binding", "binding to the receptor",
                                      "receptor-binding domain", "receptor binding domain"]),
    ("C9000023", "Receptor", ["receptor", "receptors", "cellular receptor", "virus receptor"]),
    ("C9000024", "Cytokine release", ["cytokine release", "cytokine production", "cytokine secretion"]),
    ("C9000025", "Cytokine", ["cytokine", "cytokines"]),
    ("C9000026", "Cytokine storm", ["cytokine storm", "cytokine release syndrome"]),
    ("C9000027", "Transmission", ["transmission", "transmissibility", "rate of transmission", "transmission rate",
                                  "viral transmission", "virus transmission", "spread of the virus"]),
    ("C9000028", "Mortality", ["mortality", "mortality rate", "death rate", "deaths"]),
    ("C9000029", "Older adults", ["older adults", "older adult", "elderly", "elderly patients", "older patients"]),
    ("C9000030", "ACE2", ["ace2", "ace-2", "angiotensin-converting enzyme 2", "angiotensin converting enzyme 2"]),
    ("C9000031", "Gene expression", ["expression", "gene expression", "protein expression", "expression level",
                                     "expression levels"]),
    ("C9000032", "Fever", ["fever", "fevers", "febrile", "pyrexia"]),
    ("C9000033", "Cough", ["cough", "coughing", "coughs"]),
    ("C9000034", "Treatment response", ["response to treatment", "treatment response", "response to therapy",
                                        "therapeutic response"]),
    ("C9000035", "Therapy", ["treatment", "treatments", "therapy", "therapies", "antiviral therapy"]),
    ("C9000036", "Viral load", ["viral load", "viral loads", "virus load", "viral titer", "viral titers",
                                "virus titer", "virus titers"]),
    ("C9000037", "Sputum", ["sputum", "sputum samples", "sputum sample"]),
    ("C9000038", "T cell activation", ["t cell activation", "t-cell activation", "t lymphocyte activation"]),
    ("C9000039", "Cell activation", ["cell activation"]),
    ("C9000040", "T lymphocyte", ["t cell", "t cells", "t-cell", "t-cells", "t lymphocyte", "t lymphocytes"]),
    ("C9000041", "Incubation period", ["incubation period", "incubation periods", "incubation time"]),
    ("C9000042", "Patient", ["patient", "patients"]),
    # -- general biomedical terms of CORD-19-like text ----------------------------------
    ("C9000100", "Virus", ["virus", "viruses", "virion", "virions", "viral particle", "viral particles",
                           "virus particle", "virus particles"]),
    ("C9000101", "Protein", ["protein", "proteins", "polypeptide", "polypeptides"]),
    ("C9000102", "Cell", ["cell", "cells"]),
    ("C9000103", "Infection", ["infection", "infections", "viral infection", "viral infections", "virus infection"]),
    ("C9000104", "Replication", ["replication", "genome replication", "rna replication"]),
    ("C9000105", "Genome", ["genome", "genomes"]),
    ("C9000106", "Gene", ["gene", "genes"]),
    ("C9000107", "RNA virus", ["rna virus", "rna viruses", "ssrna virus", "ssrna viruses",
                               "positive-strand rna virus", "positive-strand rna viruses"]),
    ("C9000108", "Messenger RNA", ["mrna", "mrnas", "messenger rna", "messenger rnas"]),
    ("C9000109", "Transfer RNA", ["trna", "trnas", "transfer rna", "transfer rnas"]),
    ("C9000110", "Subgenomic RNA", ["subgenomic rna", "subgenomic rnas", "subgenomic mrna", "subgenomic mrnas",
                                    "sub genomic rna"]),
    ("C9000111", "RNA synthesis", ["rna synthesis", "mrna synthesis", "rna7 synthesis"]),
    ("C9000112", "RNA polymerase", ["rna polymerase", "rna-dependent rna polymerase", "rna dependent rna polymerase",
                                    "replicase", "replicase gene"]),
    ("C9000113", "Polymerase", ["polymerase", "polymerases"]),
    ("C9000114", "Complementary DNA", ["cdna", "cdnas", "complementary dna"]),
    ("C9000115", "Plasmid", ["plasmid", "plasmids"]),
    ("C9000116", "Nucleotide", ["nucleotide", "nucleotides", "nucleotide sequence", "nucleotide sequences"]),
    ("C9000117", "Nucleic acid", ["nucleic acid", "nucleic acids"]),
    ("C9000118", "Amino acid", ["amino acid", "amino acids", "amino acid residue", "amino acid residues"]),
    ("C9000119", "Peptide", ["peptide", "peptides"]),
    ("C9000120", "Enzyme", ["enzyme", "enzymes"]),
    ("C9000121", "Protease", ["protease", "proteases", "proteinase", "proteinases", "peptidase", "peptidases"]),
    ("C9000122", "Coronavirus main protease", ["main proteinase", "main proteinases", "main protease", "mpro",
                                               "3c-like proteinase", "3c-like protease", "3clpro"]),
    ("C9000123", "Glycoprotein", ["glycoprotein", "glycoproteins"]),
    ("C9000124", "Nucleocapsid protein", ["nucleocapsid", "nucleocapsid protein", "nucleocapsid proteins",
                                          "n protein"]),
    ("C9000125", "Viral envelope", ["viral envelope", "envelope protein", "envelope proteins",
                                    "envelope glycoprotein"]),
    ("C9000126", "Mutation", ["mutation", "mutations", "point mutation", "point mutations"]),
    ("C9000127", "Mutant", ["mutant", "mutants", "mutant strain", "mutant strains", "double mutant",
                            "double mutants"]),
    ("C9000128", "Transcription", ["transcription", "discontinuous transcription", "transcription initiation"]),
    ("C9000129", "Translation", ["translation", "protein synthesis"]),
    ("C9000130", "Ribosomal frameshifting", ["ribosomal frameshifting", "ribosomal frameshift", "frameshifting",
                                             "frameshift", "frameshifts", "frame shift", "frame shifting"]),
    ("C9000131", "Ribosome", ["ribosome", "ribosomes"]),
    ("C9000132", "Codon", ["codon", "codons", "stop codon", "stop codons", "start codon", "initiation codon"]),
    ("C9000133", "Anticodon", ["anticodon", "anticodons", "anti codon"]),
    ("C9000134", "RNA pseudoknot", ["pseudoknot", "pseudoknots", "rna pseudoknot"]),
    ("C9000135", "Stem-loop", ["stem loop", "stem-loop", "stem loops", "stem-loops", "hairpin", "hairpins"]),
    ("C9000136", "Open reading frame", ["open reading frame", "open reading frames", "reading frame",
                                        "reading frames"]),
    ("C9000137", "Leader sequence", ["leader sequence", "leader sequences", "leader rna"]),
    ("C9000138", "Golgi apparatus", ["golgi", "golgi apparatus", "golgi complex", "golgi network",
                                     "trans-golgi network", "golgi membranes"]),
    ("C9000139", "Cell membrane", ["membrane", "membranes", "cell membrane", "plasma membrane"]),
    ("C9000140", "Membrane fusion", ["membrane fusion", "fusion", "cell fusion", "virus-cell fusion"]),
    ("C9000141", "Cytoplasm", ["cytoplasm", "cytosol"]),
    ("C9000142", "Endoplasmic reticulum", ["endoplasmic reticulum"]),
    ("C9000143", "Cell nucleus", ["nucleus", "nuclei", "cell nucleus"]),
    ("C9000144", "Heterogeneous nuclear ribonucleoprotein", ["hnrnp", "hnrnp a1", "hnrnps",
                                                             "heterogeneous nuclear ribonucleoprotein"]),
    ("C9000145", "Antigen", ["antigen", "antigens"]),
    ("C9000146", "HLA-B", ["hla-b", "hla b", "hla-b antigen"]),
    ("C9000147", "Epithelial cell", ["epithelial cell", "epithelial cells"]),
    ("C9000148", "HeLa cells", ["hela", "hela cells", "hela cell"]),
    ("C9000149", "Cell line", ["cell line", "cell lines"]),
    ("C9000150", "Lung", ["lung", "lungs"]),
    ("C9000151", "Blood", ["blood", "whole blood", "blood samples", "blood sample"]),
    ("C9000152", "Serum", ["serum", "sera", "serum samples"]),
    ("C9000153", "Tissue", ["tissue", "tissues"]),
    ("C9000154", "Sepsis", ["sepsis", "septicemia", "septic shock"]),
    ("C9000155", "Hepatitis", ["hepatitis"]),
    ("C9000156", "Hepatitis C virus", ["hepatitis c virus", "hcv-1"]),
    ("C9000157", "Mouse hepatitis virus", ["mouse hepatitis virus", "murine hepatitis virus", "mhv-a59"]),
    ("C9000158", "Equine arteritis virus", ["equine arteritis virus"]),
    ("C9000159", "Arterivirus", ["arterivirus", "arteriviruses"]),
    ("C9000160", "Rhinovirus", ["rhinovirus", "rhinoviruses"]),
    ("C9000161", "Influenza", ["influenza", "influenza virus", "influenza viruses", "influenza a"]),
    ("C9000162", "HIV-1", ["hiv-1", "hiv 1", "human immunodeficiency virus", "human immunodeficiency virus type 1"]),
    ("C9000163", "HIV-1 gp41", ["gp41", "hiv-1 gp41"]),
    ("C9000164", "Transmissible gastroenteritis virus", ["tgev", "transmissible gastroenteritis virus"]),
    ("C9000165", "Bacteria", ["bacteria", "bacterium"]),
    ("C9000166", "Salmonella", ["salmonella", "salmonella typhimurium", "typhimurium"]),
    ("C9000167", "Escherichia coli", ["escherichia coli", "e. coli"]),
    ("C9000168", "Helicobacter pylori", ["helicobacter pylori", "h. pylori"]),
    ("C9000169", "Epidemic", ["epidemic", "epidemics", "pandemic", "pandemics"]),
    ("C9000170", "Disease outbreak", ["outbreak", "outbreaks", "disease outbreak"]),
    ("C9000171", "Quarantine", ["quarantine", "quarantined", "isolation ward"]),
    ("C9000172", "Hospital", ["hospital", "hospitals"]),
    ("C9000173", "Health care worker", ["health care worker", "health care workers", "healthcare worker",
                                        "healthcare workers", "medical staff"]),
    ("C9000174", "Intensive care", ["intensive care", "intensive care unit", "intensive care units"]),
    ("C9000175", "Aerosol", ["aerosol", "aerosols", "air samples", "air sample"]),
    ("C9000176", "Airborne transmission", ["airborne transmission", "airborne"]),
    ("C9000177", "Respiratory droplet", ["droplet", "droplets", "respiratory droplets"]),
    ("C9000178", "Luciferase", ["luciferase", "luciferase reporter", "luciferase activity"]),
    ("C9000179", "RT-PCR", ["rt-pcr", "rt pcr", "reverse transcription pcr", "real-time pcr",
                            "polymerase chain reaction"]),
    ("C9000180", "Mutagenesis", ["mutagenesis", "site-directed mutagenesis"]),
    ("C9000181", "Transfection", ["transfection", "transfections"]),
    ("C9000182", "Recombination", ["recombination", "rna recombination"]),
    ("C9000183", "Sequencing", ["sequencing", "genome sequencing"]),
    ("C9000184", "Interleukin", ["interleukin", "interleukins"]),
    ("C9000185", "Interleukin-6", ["interleukin-6", "interleukin 6", "il-6", "il 6"]),
    ("C9000186", "Tumor necrosis factor", ["tumor necrosis factor", "tumour necrosis factor", "tnf-alpha"]),
    ("C9000187", "Chemokine", ["chemokine", "chemokines"]),
    ("C9000188", "Macrophage", ["macrophage", "macrophages"]),
    ("C9000189", "Lymphocyte", ["lymphocyte", "lymphocytes", "lymphopenia"]),
    ("C9000190", "Neutrophil", ["neutrophil", "neutrophils"]),
    ("C9000191", "Neutralizing antibody", ["neutralizing antibody", "neutralizing antibodies",
                                           "neutralising antibody", "neutralising antibodies"]),
    ("C9000192", "Monoclonal antibody", ["monoclonal antibody", "monoclonal antibodies"]),
    ("C9000193", "Acute respiratory distress syndrome", ["acute respiratory distress syndrome", "ards"]),
    ("C9000194", "Hypoxia", ["hypoxia", "hypoxemia"]),
    ("C9000195", "CEACAM1", ["ceacam1", "ceacam1a", "msceacam1a", "mceacam1a"]),
    ("C9000196", "Cell adhesion", ["cell adhesion", "adhesion molecule", "adhesion molecules"]),
    ("C9000197", "Sedolisin", ["sedolisin", "sedolisins", "kumamolisin"]),
    ("C9000198", "Tripeptidyl-peptidase 1", ["cln2", "tripeptidyl-peptidase 1", "tripeptidyl peptidase"]),
    ("C9000199", "Immunity", ["immunity", "immune system"]),
    ("C9000200", "Symptom", ["symptom", "symptoms"]),
    ("C9000201", "Diagnosis", ["diagnosis", "diagnoses", "diagnostic test", "diagnostic tests"]),
    ("C9000202", "Microarray", ["microarray", "microarrays"]),
    ("C9000203", "Substrate", ["substrate", "substrates"]),
    ("C9000204", "Protein domain", ["protein domain", "domain", "domains", "n-terminal domain", "c-terminal domain"]),
    ("C9000205", "Catalytic site", ["active site", "catalytic site", "catalytic residues", "catalytic dyad"]),
    ("C9000206", "Protein structure", ["crystal structure", "protein structure", "secondary structure",
                                       "tertiary structure"]),
]


def validate(concepts: list[tuple[str, str, list[str]]]) -> None:
    """Ids well-formed and unique, every term long enough and used once."""
    from gears_pipelines.nlp.concepts import MIN_TERM_LENGTH, normalize_term

    ids: set[str] = set()
    owner: dict[str, str] = {}
    for concept_id, name, terms in concepts:
        if not ID_PATTERN.match(concept_id):
            raise SystemExit(f"bad concept id {concept_id!r}")
        if concept_id in ids:
            raise SystemExit(f"concept id {concept_id} used twice")
        ids.add(concept_id)
        if not name or "\t" in name or not terms:
            raise SystemExit(f"{concept_id}: bad name or no terms")
        for term in terms:
            key = normalize_term(term)
            if len(key) < MIN_TERM_LENGTH or "\t" in term:
                raise SystemExit(f"{concept_id}: term {term!r} would be skipped by the matcher")
            if key in owner:
                raise SystemExit(f"term {key!r} given to {owner[key]} and {concept_id}")
            owner[key] = concept_id


def write(path: Path, concepts: list[tuple[str, str, list[str]]]) -> tuple[int, int]:
    """Write the TSV; return (terms, concepts)."""
    lines = [
        "# Gears Fabric concept dictionary: term<TAB>concept_id<TAB>canonical name",
        "# Generated by scripts/build_dictionary.py (edit the table there, then re-run it).",
        "# Made-up ids (C9 + 6 digits) for the project's generated corpus and common",
        "# biomedical terms; not UMLS data. See pipelines/nlp/concepts.py for the format.",
    ]
    terms = 0
    for concept_id, name, concept_terms in concepts:
        lines.append(f"# {concept_id} {name}")
        for term in concept_terms:
            lines.append(f"{term}\t{concept_id}\t{name}")
            terms += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return terms, len(concepts)


def run_check(texts: dict[str, str], dictionary_path: Path) -> dict[str, float]:
    """Split, correct and match ``texts``; return counts and rates."""
    from gears_pipelines.nlp import concepts, sentences, spelling

    dictionary = concepts.load_dictionary(dictionary_path)
    spelling.warm_up()
    stats = {"articles": len(texts), "sentences": 0, "with_match": 0, "with_pair": 0, "matches": 0, "pairs": 0}
    distinct_pairs: set[tuple[str, str]] = set()
    distinct_concepts: set[str] = set()
    started = time.perf_counter()
    for text in texts.values():
        for sentence in sentences.split_sentences(text):
            corrected = spelling.correct(sentence)
            matches = dictionary.find_concepts(corrected)
            pairs = concepts.concept_pairs(matches)
            stats["sentences"] += 1
            stats["matches"] += len(matches)
            stats["pairs"] += len(pairs)
            stats["with_match"] += bool(matches)
            stats["with_pair"] += bool(pairs)
            distinct_concepts.update(m.concept_id for m in matches)
            distinct_pairs.update((a.id, b.id) for a, b in pairs)
    stats["seconds"] = round(time.perf_counter() - started, 3)
    stats["distinct_concepts"] = len(distinct_concepts)
    stats["distinct_pairs"] = len(distinct_pairs)
    stats["pair_rate"] = round(stats["with_pair"] / max(stats["sentences"], 1), 4)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"where to write the TSV (default {OUTPUT})")
    parser.add_argument("--check", action="store_true", help="run the generated corpus through the NLP steps")
    parser.add_argument("--articles", type=int, default=50, help="generated articles for --check (default 50)")
    parser.add_argument("--sample", type=Path, help="also check a folder of CORD-19 JSON files")
    args = parser.parse_args(argv)

    validate(CONCEPTS)
    terms, count = write(args.output, CONCEPTS)
    from gears_pipelines.nlp.concepts import load_dictionary

    loaded = load_dictionary(args.output)  # the written file must load
    print(f"{args.output}: {terms} terms, {count} concepts ({len(loaded)} loaded)")
    if args.check:
        from gears_pipelines.corpus import generate_articles

        generated = {a["paper_id"]: " ".join(p["text"] for p in a["body_text"])
                     for a in generate_articles(args.articles)}
        print("generated corpus:", json.dumps(run_check(generated, args.output)))
        if args.sample:
            sample = {}
            for path in sorted(args.sample.glob("*.json")):
                article = json.loads(path.read_text(encoding="utf-8"))
                sample[path.stem] = " ".join(p["text"] for p in article["body_text"])
            print(f"{args.sample}:", json.dumps(run_check(sample, args.output)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
