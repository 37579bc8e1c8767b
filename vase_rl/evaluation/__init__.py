"""Evaluation suite: forgetting, domain-inference quality, disentanglement metrics, plots,
and the experiment runner that ties them to a VASE learner.

The metric functions are pure and learner-independent: they take latents, factors, probe
curves, accuracy matrices or domain-id sequences (numpy arrays or tensors) and return
numbers, so they can score any representation learner.

* :mod:`~vase_rl.evaluation.disentanglement`: MIG (Chen et al. 2018) and DCI (Eastwood &
  Williams 2018) as disentanglement_lib computes them (histogram MI; gradient-boosted trees;
  10,000 samples).
* :mod:`~vase_rl.evaluation.forgetting`: accuracy-matrix measures (ACC and BWT of Lopez-Paz &
  Ranzato 2017, forgetting of Chaudhry et al. 2018) and the VASE paper's forgetting on curves.
* :mod:`~vase_rl.evaluation.domains`: switch detection, clustering agreement and
  re-identification of inferred domains against the true stream.
* :mod:`~vase_rl.evaluation.probes`: latent read-out probes (VASE paper, appendix A.5) and a
  tracker that records their scores per domain.
* :mod:`~vase_rl.evaluation.latent_usage`: added / reused / frozen / unused latents per domain.
* :mod:`~vase_rl.evaluation.experiment`: :func:`run_experiment` trains a learner on a domain
  stream with probes alongside and writes every measure above (resumable).
* :mod:`~vase_rl.evaluation.ablation`: the paper's S/D/A x objective x seeds study.
* :mod:`~vase_rl.evaluation.plots`: traversals, cross-domain reconstructions, atypicality
  profile, probe curves (matplotlib, imported lazily).
* :mod:`~vase_rl.evaluation.results_check`: stale results and unsourced docs figures
  (``vase-rl results check``).
"""

from vase_rl.evaluation.ablation import (
    DEFAULT_VARIANTS,
    ablation_table,
    ablation_variants,
    run_ablation,
    variant_config,
)
from vase_rl.evaluation.disentanglement import (
    dci,
    dci_from_importance,
    dci_scores,
    discretize,
    mig,
    mig_scores,
    mutual_info_matrix,
)
from vase_rl.evaluation.domains import (
    adjusted_rand_index,
    boundary_scores,
    change_points,
    domain_agreement,
    reidentification,
)
from vase_rl.evaluation.experiment import (
    LATENTS_IN_USE_DEFINITION,
    TABLE1_SEQUENCE,
    TABLE3_SEQUENCE,
    decoder_dependence,
    evaluate_learner,
    load_run,
    matrix_measures,
    measure_latent_usage,
    probe_latents,
    probe_view,
    run_experiment,
)
from vase_rl.evaluation.forgetting import (
    Segment,
    accuracy_matrix,
    average_accuracy,
    backward_transfer,
    chaudhry_forgetting,
    paper_forgetting,
    paper_forgetting_per_domain,
    paper_max_accuracy,
    segments_from_labels,
)
from vase_rl.evaluation.latent_usage import USAGE_LABELS, LatentUsage, latent_usage_table
from vase_rl.evaluation.probes import LatentProbe, ProbeTracker

__all__ = [
    # disentanglement
    "mig",
    "mig_scores",
    "mutual_info_matrix",
    "discretize",
    "dci",
    "dci_scores",
    "dci_from_importance",
    # forgetting
    "Segment",
    "segments_from_labels",
    "average_accuracy",
    "backward_transfer",
    "chaudhry_forgetting",
    "accuracy_matrix",
    "paper_forgetting",
    "paper_forgetting_per_domain",
    "paper_max_accuracy",
    # domain inference
    "change_points",
    "boundary_scores",
    "adjusted_rand_index",
    "domain_agreement",
    "reidentification",
    # probes
    "LatentProbe",
    "ProbeTracker",
    # latent usage
    "USAGE_LABELS",
    "LatentUsage",
    "latent_usage_table",
    # experiments
    "TABLE1_SEQUENCE",
    "TABLE3_SEQUENCE",
    "run_experiment",
    "evaluate_learner",
    "load_run",
    "probe_latents",
    "probe_view",
    "decoder_dependence",
    "measure_latent_usage",
    "matrix_measures",
    "LATENTS_IN_USE_DEFINITION",
    "DEFAULT_VARIANTS",
    "ablation_variants",
    "variant_config",
    "run_ablation",
    "ablation_table",
]
