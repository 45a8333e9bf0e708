"""The item schema, validated with pydantic wherever items enter the server."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

ID_MAX = 128
TEXT_MAX = 512


class CatalogueItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=ID_MAX)
    title: str = Field(min_length=1, max_length=TEXT_MAX)
    category: str = Field(min_length=1, max_length=ID_MAX)
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("id", "category")
    @classmethod
    def _no_blank(cls, v: str) -> str:
        if not v.strip() or any(ch in v for ch in "\n\r\t"):
            raise ValueError("must be non-blank and single-line")
        return v

    @field_validator("attributes")
    @classmethod
    def _small_attrs(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not key or len(key) > ID_MAX or len(value) > TEXT_MAX:
                raise ValueError(f"attribute {key!r} is empty or too long")
        return v

    def text(self) -> str:
        return item_text(self.title, self.category, self.attributes)


def item_text(title: str, category: str, attributes: dict[str, str]) -> str:
    """What gets embedded: the words a shopper would use for the item."""
    attrs = ", ".join(f"{k} {v}" for k, v in attributes.items() if k != "price")
    return f"{title}. {category}. {attrs}".strip()
