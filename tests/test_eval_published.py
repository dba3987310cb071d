"""The Markdown table of `logos eval`: our figures beside LOGOS 1B/3B/8B and the strongest baseline."""

from logos_jax.eval.published import PUBLISHED, markdown_table


def test_retro_row_has_all_three_logos_sizes_and_a_baseline():
    table = markdown_table({"task": "retro", "inputs": 4, "samples": 128, "top_1": 0.5})
    assert (
        "| retrosynthesis top-1 exact match | 50.0 | 64.0 | 71.5 | 74.8 | LocalRetro 53.4" in table
    )
    assert "| top_1 | 0.50 |" in table  # every scalar figure is listed below


def test_each_task_shows_its_published_figures_and_missing_ones_as_dashes():
    ligand = markdown_table({"task": "ligand", "vina_mean": 7.1, "targets": [{"id": "x"}]})
    assert "| pocket ligand design, mean −Vina (kcal/mol) | 7.10 | — | — | 7.76 |" in ligand
    assert "| targets |" not in ligand  # lists stay in the JSON
    material = markdown_table({"task": "material", "vnu": None})
    assert "| MOF generation, VNU | — | — | — | 39.0 |" in material
    free = markdown_table({"task": "free", "samples": 3})
    assert "LOGOS-8B" not in free and "| samples | 3 |" in free
    assert all(p.protocol for p in PUBLISHED)  # every row says how our protocol differs
