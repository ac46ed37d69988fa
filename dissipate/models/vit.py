"""Vision transformers: residual (vitN), plain (plainvitN) and PNNH (pnnhvitN), at one width, about ViT-Tiny's.

A pre-LN ViT: patch embedding (a conv of stride and size `patch_size`) plus a learned position embedding, blocks of
attention then MLP, a final LN, mean pooling over the tokens and a linear head. One block, on tokens x of width d:

    residual  (vitN):      a = x + Attn(LN1(x));           y = a + W2 act(W1 LN2(a))
    plain     (plainvitN): a = Attn(LN1(x));               y = W2 act(W1 LN2(a))
    PNNH      (pnnhvitN):  a = Attn+(LN1(x), code=E_a x);  y = [W2, E_m^T, -E_m^T] act([W1 LN2(a); E_m a; -E_m a])

The PNNH block is the project's reconstruction (docs/design.md, section 2). In the MLP the code E_m a crosses the
MLP's own activation as a +/- pair, as in the CNN block (GELU(t) - GELU(-t) = t). In the attention, Attn+ has extra
code heads: their queries and keys are zero and their logits are masked to the diagonal, so each token attends only
to itself and the softmax (of a row with one finite entry: one-hot) passes their values, the code E_a x, exactly; E_a^T
is their output projection. The code crosses the attention op itself, in the same call as the learned heads, and
nothing goes around it. With orthonormal E and k = d, E^T E = I, and a PNNH block computes the residual block.

Sites: each block's MLP activation (`blocks.i.act`), and the outputs of its attention sub-block (`blocks.i.attn_out`)
and of the block (`blocks.i.out`), identity modules that the block declares in `site_kinds`. Tokens map back to their
patches row by row, so a read-out of the image works on them as on a CNN's feature map.

The patch size follows the image size (the divisor of the size nearest size / 8, about 8x8 tokens) unless
`patch_size` is given. A size whose divisors are all far from size / 8 (a prime, such as 31) would get a patch so
small that the tokens (961 at 31 px) make the model a hundred times slower: such a size is refused, with sizes that
work suggested, when the default patch would leave more than 16x16 tokens; `patch_size` given explicitly is built.

Weights are He-normal (fan_in) like the CNNs', so that "at initialisation" means what the theory means; the position
embedding is N(0, 0.02^2) as in timm. `impl` ("fused" or "explicit") is as for the CNN PNNH: the fused block adds
E^T E x (x itself where E^T E = I) and skips the code heads and the pair; the probe always measures the explicit one.

References:
    Dosovitskiy et al. An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale. ICLR 2021.
    Dong, Cordonnier and Loukas. Attention is Not All You Need: Pure Attention Loses Rank Doubly Exponentially with
    Depth. ICML 2021.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidArgumentError
from ._layers import init_he_normal, make_act
from ._registry import register_model
from .pnnh import IMPLS, add_coder, checked_choice, cross, fused_code

VIT_DEPTHS = (6, 12, 24)
TRANSFORMER_FAMILIES = ("plainvit", "vit", "pnnhvit")
EMBED_DIM, NUM_HEADS, MLP_RATIO = 192, 3, 4  # ViT-Tiny's width
GRID = 8  # the patch follows the image size: the divisor of the size nearest size / GRID (4 at 28 and 32 px)
MAX_GRID = 2 * GRID  # a default patch may leave at most 16x16 tokens (4x the 8x8 aimed at); a prime size would get
# patch 1 (31 px: 961 tokens, 9.4 GFLOPs an image for vit6) and is refused, unless patch_size is given
DEFAULT_IMAGE_SIZE = 32


def default_patch_size(img_size: int) -> int:
    """The divisor of `img_size` nearest img_size / 8 (the smaller on a tie): 4 at 28 and 32 px, 28 at 224 px."""
    divisors = [p for p in range(1, img_size + 1) if img_size % p == 0]
    return min(divisors, key=lambda p: (abs(p - img_size / GRID), p))


class Attention(nn.Module):
    """Multi-head self-attention; with a coder (PNNH) it has code heads too, which carry E x through the same
    attention call with logits masked to the diagonal, their output decoded by E^T (see the module docstring)."""

    def __init__(self, dim: int, num_heads: int, *, coder_options: dict | None = None, impl: str = "fused"):
        super().__init__()
        if dim % num_heads:
            raise InvalidArgumentError(f"width {dim} does not split into {num_heads} heads")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.impl = impl
        self.has_code = coder_options is not None
        if self.has_code:
            add_coder(self, dim, **coder_options)
            self.code_heads = -(-self.coder_chs // self.head_dim)  # the code, zero-padded to whole heads

    def forward(self, x: torch.Tensor, code_input: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if not self.has_code or self.impl == "fused":
            out = F.scaled_dot_product_attention(q, k, v)
            out = self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))
            return out if code_input is None else out + fused_code(self, code_input)
        coder = self.coder  # (k, d)
        code = F.pad(code_input @ coder.T, (0, self.code_heads * self.head_dim - self.coder_chs))
        code = code.view(batch, tokens, self.code_heads, self.head_dim).transpose(1, 2)
        zeros = code.new_zeros(code.shape)
        diagonal = torch.full((tokens, tokens), float("-inf"), device=x.device, dtype=x.dtype).fill_diagonal_(0)
        mask = torch.cat([diagonal.new_zeros(self.num_heads, tokens, tokens),
                          diagonal.expand(self.code_heads, tokens, tokens)])  # learned heads see every token
        out = F.scaled_dot_product_attention(torch.cat([q, zeros], 1), torch.cat([k, zeros], 1),
                                             torch.cat([v, code], 1), attn_mask=mask)
        heads, code = out.split([self.num_heads, self.code_heads], dim=1)
        heads = heads.transpose(1, 2).reshape(batch, tokens, dim)
        code = code.transpose(1, 2).reshape(batch, tokens, -1)[..., :self.coder_chs]
        return self.proj(heads) + code @ coder


class ViTBlock(nn.Module):
    """One pre-LN block: `kind` "residual", "plain" or "pnnh" (see the module docstring)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, kind: str, *, act: str = "gelu",
                 coder_options: dict | None = None, impl: str = "fused"):
        super().__init__()
        self.kind, self.impl = kind, impl
        pnnh = kind == "pnnh"
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, coder_options=coder_options if pnnh else None, impl=impl)
        self.attn_out = nn.Identity()  # a site: the attention sub-block's output
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = make_act(act)  # PNNH, explicit: over [W1 LN2(a), E_m a, -E_m a]
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)
        self.out = nn.Identity()  # a site: the block's output
        self.site_kinds = {"attn_out": kind, "act": "pnnh" if pnnh else "plain", "out": kind}
        self.site_components = {"act": {"weight": "fc1"}}  # Theorem 3.2's plain layer, z = W1 LN2(a)
        if pnnh:
            add_coder(self, dim, **coder_options)  # E_m
            self.site_components["act"]["pair"] = "norm2"  # +/- E_m a, a being norm2's input
            self.site_channels = {"act": {"weight": self.fc1.out_features, "pair": 2 * self.coder_chs}}

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:  # the attention follows its block, as `explicit_code` switches them
        self._impl = checked_choice("impl", value, IMPLS)
        if "attn" in self._modules:
            self.attn.impl = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "pnnh":
            a = self.attn_out(self.attn(self.norm1(x), code_input=x))
            hidden = self.fc1(self.norm2(a))
            if self.impl == "fused":
                return self.out(self.fc2(self.act(hidden)) + fused_code(self, a))
            coder = self.coder  # (k, d)
            hidden, code = cross(self.act, hidden, a @ coder.T, dim=-1)
            return self.out(self.fc2(hidden) + code @ coder)
        a = self.attn(self.norm1(x))
        a = self.attn_out(x + a if self.kind == "residual" else a)
        y = self.fc2(self.act(self.fc1(self.norm2(a))))
        return self.out(a + y if self.kind == "residual" else y)


class VisionTransformer(nn.Module):
    """Patch embedding and position embedding, `depth` blocks, final LN, mean pooling over tokens, linear head."""

    def __init__(self, depth: int, kind: str, *, num_classes: int = 10, in_chans: int = 3, img_size: int = 32,
                 patch_size: int | None = None, embed_dim: int = EMBED_DIM, num_heads: int = NUM_HEADS,
                 mlp_ratio: int = MLP_RATIO, act: str = "gelu", coder_options: dict | None = None,
                 impl: str = "fused"):
        super().__init__()
        self.img_size = img_size
        self.resolved_options = {"img_size": img_size, "patch_size": patch_size}  # what the spec records
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.grid = img_size // patch_size
        self.pos_embed = nn.Parameter(torch.empty(1, self.grid ** 2, embed_dim))
        self.blocks = nn.Sequential(*(ViTBlock(embed_dim, num_heads, mlp_ratio, kind, act=act,
                                               coder_options=coder_options, impl=impl) for _ in range(depth)))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        init_he_normal(self)
        nn.init.normal_(self.pos_embed, std=0.02)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise InvalidArgumentError(f"this ViT takes {self.img_size}x{self.img_size} images (its img_size), got "
                                       f"{x.shape[-2]}x{x.shape[-1]}")
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, grid^2, d), row by row
        return self.norm(self.blocks(tokens + self.pos_embed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(1))


def _check_size(img_size: int, patch_size: int | None) -> int:
    """The patch size to build with: `patch_size`, or the divisor of img_size nearest img_size / 8, refused where it
    leaves more than MAX_GRID x MAX_GRID tokens (see the module's docstring)."""
    for name, value in (("img_size", img_size), ("patch_size", patch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    if patch_size is None:
        patch_size = default_patch_size(img_size)
        grid = img_size // patch_size
        if grid > MAX_GRID:
            def fits(size: int) -> bool:
                return size // default_patch_size(size) <= MAX_GRID
            below = next(size for size in range(img_size - 1, 0, -1) if fits(size))
            above = next(size for size in range(img_size + 1, 2 * img_size) if fits(size))
            raise InvalidArgumentError(f"img_size {img_size} has no divisor near {img_size}/{GRID} to patch it by "
                                       f"(patch {patch_size} would leave {grid}x{grid} tokens, more than "
                                       f"{MAX_GRID}x{MAX_GRID}); use an image size such as {below} or {above}, or "
                                       f"give patch_size (a divisor of {img_size}) to build it anyway")
    if img_size % patch_size:
        raise InvalidArgumentError(f"patch_size {patch_size} does not divide img_size {img_size}")
    return patch_size


def build_vit(depth: int, *, residual: bool, num_classes: int = 10, in_chans: int = 3,
              img_size: int = DEFAULT_IMAGE_SIZE, patch_size: int | None = None,
              act: str = "gelu") -> VisionTransformer:
    """A residual ViT (vitN) or its plain twin (plainvitN, both residual adds removed) of `depth` blocks, for
    `img_size` px images; `patch_size` defaults to the divisor of img_size nearest img_size / 8, and a size that
    would leave more than 16x16 tokens by default (a prime, such as 31) is refused unless it is given."""
    return VisionTransformer(depth, "residual" if residual else "plain", num_classes=num_classes, in_chans=in_chans,
                             img_size=img_size, patch_size=_check_size(img_size, patch_size), act=act)


def build_pnnhvit(depth: int, *, num_classes: int = 10, in_chans: int = 3, img_size: int = DEFAULT_IMAGE_SIZE,
                  patch_size: int | None = None, act: str = "gelu", coder_ratio: float = 1.0,
                  coder: str = "orthogonal", orthogonal_map: str = "cayley", impl: str = "fused") -> VisionTransformer:
    """A PNNH ViT (pnnhvitN): as build_vit, with the code crossing every attention and MLP activation; the coder
    options are the CNN PNNH's, with k = coder_ratio * d for both E_a and E_m."""
    coder_options = dict(coder_ratio=coder_ratio, coder=coder, orthogonal_map=orthogonal_map)
    return VisionTransformer(depth, "pnnh", num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                             patch_size=_check_size(img_size, patch_size), act=act, coder_options=coder_options,
                             impl=checked_choice("impl", impl, IMPLS))


for _depth in VIT_DEPTHS:
    register_model(f"plainvit{_depth}", partial(build_vit, _depth, residual=False), family="plainvit", depth=_depth)
    register_model(f"vit{_depth}", partial(build_vit, _depth, residual=True), family="vit", depth=_depth)
    register_model(f"pnnhvit{_depth}", partial(build_pnnhvit, _depth), family="pnnhvit", depth=_depth)
