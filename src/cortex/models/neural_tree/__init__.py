"""The NeuralTree: one multi-task model of roots → trunk → branches → leaves, HF-native.

Interface contract (training, LaMBO-2 design and the router build on it):

**Config.** :class:`NeuralTreeConfig` (``model_type="neural_tree"``) holds plain dicts ``roots``,
``trunk``, ``branches``, ``leaves``; typed views are ``config.root_specs()``, ``trunk_spec()``,
``branch_specs()``, ``leaf_specs()``. It validates itself when made and raises one
:class:`~cortex.errors.ConfigError` listing every problem by field (unknown kind with the
choices, a leaf naming a missing branch/root, a denoising leaf whose ``vocab_size`` differs from
its root's, an HF ``source`` that is neither a folder nor a registry entry...). ``NeuralTreeConfig()``
is a small valid tree (protein conv1d root, sum trunk, conv1d branch, regressor leaf).

**Model.** :class:`NeuralTreeModel` is a ``PreTrainedModel``; after ``import cortex``,
``AutoModel.from_pretrained(folder)`` returns it, and without it
``AutoModel.from_pretrained(folder, trust_remote_code=True)`` does (through the ``auto_map`` module,
:mod:`.remote_code`). Weights load from safetensors only: a pickle-only folder raises
:class:`~cortex.errors.UnsafeWeightsError` unless ``allow_pickle=True``; ``dtype=`` gives the whole
tree one dtype and ``attn_implementation=`` reaches every HF backbone. ``save_pretrained(folder)`` writes
``config.json``, ``model.safetensors``, ``cortex_neural_tree.py`` and each root's tokenizer in ``folder/tokenizer_<root>/``;
``tree.root_tokenizers()`` returns ``{root: tokenizer}``: attached or saved copies first (the
local folder, or for a Hub repo id its ``tokenizer_*/`` files through huggingface_hub), else the
built-in alphabet or the HF root's source; ``tree.set_root_tokenizer(root, tok)`` attaches one.
``push_to_hub`` is transformers' and uploads the same files.

**Roots.** ``conv1d`` and ``transformer`` are built-in, with a ``protein`` or ``char`` tokenizer.
``hf`` wraps any ``AutoModel`` encoder or decoder named by ``source`` (registry name or folder) with
``pooling`` (``none`` → ``(B, T, H)``; ``mean``/``cls``/``last`` → ``(B, 1, H)``), ``freeze`` and
``hidden_layer``. The backbone's config is copied into the tree config and its weights live in the
tree's safetensors, so a saved tree loads without the source and without the network.
``NeuralTreeModel(config)`` initialises randomly; ``NeuralTreeModel.from_pretrained_roots(config)``
loads the HF roots' pretrained weights.

**Forward.** ``tree(inputs, leaf_keys=None, corruption=None, targets=None, loss_weights=None) -> NeuralTreeOutput`` where
``inputs = {root: {"input_ids": (B, T), "attention_mask": (B, T)}}`` (or ``"inputs_embeds": (B, T, E)``
instead of ids) for every root, and ``corruption = {root: CorruptionParams(frac=(B,), kind=..., allowed=..., noise=...)}``.
All input checks run before any root. With ``targets = {leaf: y}`` the output also has ``loss``
(``sum_leaf loss_weights[leaf] * leaf loss``, :meth:`NeuralTreeModel.loss`, the definition
cortex's tasks and Lightning module use) and ``leaf_losses``; ``leaf_keys`` then defaults to the
targets' leaves. Every output is a ``transformers`` ``ModelOutput`` (:mod:`.outputs`): ``root_outputs[root]``
(:class:`RootOutput`: features, masks, ``token_embeddings``, clean/corrupted ids, ``is_corrupted``,
``corrupt_frac``), ``trunk_outputs`` (:class:`TrunkOutput`: ``features (B, T, D)``, mask, ``root_spans``),
``branch_outputs[branch]`` (:class:`BranchOutput`: ``features (E, B, T, D_b)``, ``pooled (E, B, D_b)``),
``leaf_outputs[leaf]``.

**Ensembles.** A leaf with ``ensemble_size=E`` has ``E`` heads reading the first ``E`` of its
branch's members; a branch has as many members as its largest leaf ensemble. Roots and trunk
exist once and are shared by all members. Every leaf output has the ensemble axis first:
regressor ``loc/scale/eta1/eta2 (E, B, O)``, classifier ``logits (E, B, C)``, denoising LM
``logits (E, B, T, V)``, sequence regressor ``(E, B, T, O)``.

**Guidance hooks (LaMBO-2).** ``tree.embed(root, input_ids)`` gives token embeddings ``(B, T, E)``;
feed them back with ``inputs[root] = {"inputs_embeds": emb, "attention_mask": m}`` to take gradients
with respect to them. ``tree.call_from_trunk(trunk_features, leaf_keys, attention_mask, root_spans)``
reruns branches and leaves from (perturbed) trunk features.

**Losses.** Each leaf owns its loss: ``tree.leaf_loss(leaf, outputs, targets, alpha=None, mask=None)``
(fills in the leaf's root output). ``RegressorLeaf`` uses natural parameters (``eta2 = -softplus``,
floored variance), Gaussian NLL in exponential-family form, per-example label smoothing as the KL
from a moment-averaged target, and target standardization fitted with
``tree.fit_target_standardization(leaf, y_train)`` and saved as buffers.

**Registry.** ``register_tree(tree, name, registry=None, parents=None)`` saves the tree as an entry
of kind ``tree`` whose parents include its HF roots' registry names.

**Compile, export, checkpointing.** Trees with built-in roots compile with
``torch.compile(tree, fullgraph=True)`` (corruption included): no Python branch depends on data or
on the corruption kind; value checks on ids run only in eager mode. ``torch.export.export`` works
on them too. ``tree.gradient_checkpointing_enable()`` checkpoints the built-in transformer and
conv blocks (transformers' ``GradientCheckpointingLayer``) and the HF backbones' layers.

**HF Trainer.** ``cortex.tasks.TaskCollator`` turns tokenized rows into ``tree(**batch)`` keyword
arguments with targets; with ``TrainingArguments(remove_unused_columns=False, label_names=["targets"])``
``transformers.Trainer`` trains and evaluates a tree. ``get_input_embeddings`` /
``set_input_embeddings`` work on single-root trees (several roots: ``root_embeddings(root)``).
"""

from cortex.models.neural_tree.configuration import NeuralTreeConfig
from cortex.models.neural_tree.leaves import (
    ClassifierLeaf,
    DenoisingLMLeaf,
    RegressorLeaf,
    SequenceRegressorLeaf,
)
from cortex.models.neural_tree.inputs import TreeInputs
from cortex.models.neural_tree.modeling import NeuralTreeModel, NeuralTreePreTrainedModel, weighted_loss_sum
from cortex.models.neural_tree.outputs import (
    BranchOutput,
    ClassifierLeafOutput,
    DenoisingLMLeafOutput,
    NeuralTreeOutput,
    RegressorLeafOutput,
    RootOutput,
    SequenceRegressorLeafOutput,
    TrunkOutput,
)
from cortex.models.neural_tree.registry import register_tree

__all__ = [
    "BranchOutput", "ClassifierLeaf", "ClassifierLeafOutput", "DenoisingLMLeaf", "DenoisingLMLeafOutput",
    "NeuralTreeConfig", "NeuralTreeModel", "NeuralTreeOutput", "NeuralTreePreTrainedModel", "RegressorLeaf",
    "RegressorLeafOutput", "RootOutput", "SequenceRegressorLeaf", "SequenceRegressorLeafOutput", "TreeInputs", "TrunkOutput",
    "register_tree", "weighted_loss_sum",
]
