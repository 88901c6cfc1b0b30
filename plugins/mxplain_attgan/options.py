"""The checks of :class:`~mxplain_attgan.editor.AttGANEditor`'s parameters and recipe options
(one line ``[editor] attgan: ...`` each, before any training)."""

from __future__ import annotations

from mxplain.errors import UserError

from .augment import parse_policy
from .model import CLS_POOLS, UPSAMPLES

TARGET_SAMPLINGS = ("single", "permute", "uniform")
EDIT_MODES = ("render", "difference")


class AttGANOptions:
    """Parameter checks mixed into :class:`~mxplain_attgan.editor.AttGANEditor`."""

    def _check_params(self) -> None:
        for key in ("enc_dim", "dec_dim", "dis_dim", "dis_fc_dim", "n_layers", "n_critic",
                    "epochs", "batch_size"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(f"[editor] attgan: {key} must be a positive integer, got {v!r}")
        m = self.max_tiles_per_lot
        if m is not None and (not isinstance(m, int) or isinstance(m, bool) or m < 1):
            raise UserError(f"[editor] attgan: max_tiles_per_lot must be a positive integer or "
                            f"unset, got {m!r}")
        if not self.thres_int > 0:
            raise UserError(f"[editor] attgan: thres_int must be > 0, got {self.thres_int!r}")
        g = self.edit_gain
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 < g <= 4:
            raise UserError(f"[editor] attgan: edit_gain must be a number in (0, 4] (1 = the "
                            f"training's code scale), got {g!r}")
        if not 0.0 <= self.b_uniform <= 1.0:
            raise UserError(f"[editor] attgan: b_uniform must be in [0, 1], got {self.b_uniform!r}")
        if self.target_sampling not in TARGET_SAMPLINGS:
            raise UserError(f"[editor] attgan: target_sampling must be one of "
                            f"{list(TARGET_SAMPLINGS)}, got {self.target_sampling!r}")
        if not 0.0 <= self.target_min_change <= 0.5:
            raise UserError(f"[editor] attgan: target_min_change must be in [0, 0.5], "
                            f"got {self.target_min_change!r}")
        w = self.classifier_warmup_epochs
        if not isinstance(w, int) or isinstance(w, bool) or w < 0:
            raise UserError(f"[editor] attgan: classifier_warmup_epochs must be an integer >= 0, "
                            f"got {w!r}")
        if self.classifier_warmup_lr is not None and not self.classifier_warmup_lr > 0:
            raise UserError(f"[editor] attgan: classifier_warmup_lr must be > 0 or unset, "
                            f"got {self.classifier_warmup_lr!r}")
        if not (isinstance(self.cls_dropout, (int, float)) and 0.0 <= self.cls_dropout < 1.0):
            raise UserError(f"[editor] attgan: cls_dropout must be in [0, 1), "
                            f"got {self.cls_dropout!r}")
        c = self.cls_crop
        if c is not None and (not isinstance(c, int) or isinstance(c, bool) or c < 4):
            raise UserError(f"[editor] attgan: cls_crop must be an integer >= 4 or unset, "
                            f"got {c!r}")
        if self.cls_pool not in CLS_POOLS:
            raise UserError(f"[editor] attgan: cls_pool must be one of {list(CLS_POOLS)}, "
                            f"got {self.cls_pool!r}")
        if self.cls_pool == "stats" and (self.cls_crop is not None or self.cls_dropout > 0):
            raise UserError("[editor] attgan: cls_crop and cls_dropout act on the discriminator "
                            "trunk's features, which cls_pool = \"stats\" does not use; unset them")
        if self.dis_norm not in ("instancenorm", "layernorm"):
            raise UserError(f"[editor] attgan: dis_norm must be 'instancenorm' or 'layernorm', "
                            f"got {self.dis_norm!r}")
        self._check_recipe()

    def _check_recipe(self) -> None:
        """The recipe options: ``g_ema``, ``lr_d``, ``dis_sn``, ``res_blocks``, ``diffaug``,
        ``upsample``, ``noise``, ``rec_blur``, ``adv_rec``, ``edit_mode``."""
        if not (isinstance(self.rec_blur, (int, float)) and not isinstance(self.rec_blur, bool)
                and 0.0 <= self.rec_blur <= 4.0):
            raise UserError(f"[editor] attgan: rec_blur must be a Gaussian sigma in pixels in "
                            f"[0, 4] (0 = the reference's plain L1), got {self.rec_blur!r}")
        if self.edit_mode not in EDIT_MODES:
            raise UserError(f"[editor] attgan: edit_mode must be one of {list(EDIT_MODES)}, "
                            f"got {self.edit_mode!r}")
        if self.edit_mode == "difference" and self.adv_rec:
            raise UserError("[editor] attgan: adv_rec has no meaning with edit_mode = "
                            "'difference' (the reconstruction is the tile itself); drop one")
        if not isinstance(self.adv_rec, bool):
            raise UserError(f"[editor] attgan: adv_rec must be true or false, "
                            f"got {self.adv_rec!r}")
        if not isinstance(self.noise, bool):
            raise UserError(f"[editor] attgan: noise must be true or false, got {self.noise!r}")
        if self.upsample not in UPSAMPLES:
            raise UserError(f"[editor] attgan: upsample must be one of {list(UPSAMPLES)}, "
                            f"got {self.upsample!r}")
        if not (isinstance(self.g_ema, (int, float)) and 0.0 <= self.g_ema < 1.0):
            raise UserError(f"[editor] attgan: g_ema must be a decay in [0, 1) (0 = no EMA), "
                            f"got {self.g_ema!r}")
        if self.lr_d is not None and not (isinstance(self.lr_d, (int, float)) and self.lr_d > 0):
            raise UserError(f"[editor] attgan: lr_d must be > 0 or unset (= lr), "
                            f"got {self.lr_d!r}")
        if not isinstance(self.dis_sn, bool):
            raise UserError(f"[editor] attgan: dis_sn must be true or false, got {self.dis_sn!r}")
        r = self.res_blocks
        if not isinstance(r, int) or isinstance(r, bool) or r < 0:
            raise UserError(f"[editor] attgan: res_blocks must be an integer >= 0, got {r!r}")
        gs = self.gated_shortcuts
        if not isinstance(gs, int) or isinstance(gs, bool) or gs < 0:
            raise UserError(f"[editor] attgan: gated_shortcuts must be an integer >= 0, got {gs!r}")
        self._check_attribute_names()
        try:
            self._policy = parse_policy(self.diffaug)
        except ValueError as exc:
            raise UserError(f"[editor] attgan: diffaug: {exc}") from None

    def _check_attribute_names(self, attributes: tuple[str, ...] | None = None) -> None:
        """``gatt_weights`` (attribute name -> weight of its column in the generator's attribute
        loss), ``gatt_keep_weight`` (weight of the columns a target keeps at the tile's own
        value) and ``cls_trunk_attributes``; the names against the store's ``attributes`` when
        they are known."""
        t = self.cls_trunk_attributes
        if t is not None:
            if not (isinstance(t, (list, tuple)) and all(isinstance(n, str) for n in t)):
                raise UserError(f"[editor] attgan: cls_trunk_attributes must be a list of "
                                f"attribute names, got {t!r}")
            if t and self.cls_pool != "stats":
                raise UserError("[editor] attgan: cls_trunk_attributes chooses which attributes "
                                "the trunk reads instead of cls_pool = \"stats\"'s texture "
                                "head; set cls_pool = \"stats\" or unset it")
            unknown = sorted(set(t) - set(attributes)) if attributes is not None else []
            if unknown:
                raise UserError(f"[editor] attgan: cls_trunk_attributes names {unknown}, not "
                                f"attributes of the tile store {list(attributes)}")
        k = self.gatt_keep_weight
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not k > 0:
            raise UserError(f"[editor] attgan: gatt_keep_weight must be > 0, got {k!r}")
        w = self.gatt_weights
        if w is None:
            return
        if not isinstance(w, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                for v in w.values()):
            raise UserError(f"[editor] attgan: gatt_weights must be a table of attribute = weight "
                            f"(> 0), got {w!r}")
        unknown = sorted(set(w) - set(attributes)) if attributes is not None else []
        if unknown:
            raise UserError(f"[editor] attgan: gatt_weights names {unknown}, not attributes of "
                            f"the tile store {list(attributes)}")
