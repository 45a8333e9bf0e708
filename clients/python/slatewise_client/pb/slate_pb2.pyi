from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    STRATEGY_AUTO: _ClassVar[Strategy]
    STRATEGY_MODEL: _ClassVar[Strategy]
    STRATEGY_POINTWISE: _ClassVar[Strategy]
    STRATEGY_PARTIAL: _ClassVar[Strategy]
    STRATEGY_FALLBACK: _ClassVar[Strategy]

class FallbackReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FALLBACK_REASON_UNSPECIFIED: _ClassVar[FallbackReason]
    FALLBACK_REASON_ENGINE_NOT_READY: _ClassVar[FallbackReason]
    FALLBACK_REASON_ENGINE_ERROR: _ClassVar[FallbackReason]
    FALLBACK_REASON_ENGINE_DEAD: _ClassVar[FallbackReason]
    FALLBACK_REASON_OVERLOAD: _ClassVar[FallbackReason]
    FALLBACK_REASON_DEADLINE: _ClassVar[FallbackReason]
    FALLBACK_REASON_CONTEXT_TOO_LONG: _ClassVar[FallbackReason]
    FALLBACK_REASON_CIRCUIT_OPEN: _ClassVar[FallbackReason]
    FALLBACK_REASON_UNKNOWN_CANDIDATES: _ClassVar[FallbackReason]

class OverloadPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OVERLOAD_POLICY_UNSPECIFIED: _ClassVar[OverloadPolicy]
    OVERLOAD_POLICY_FALLBACK: _ClassVar[OverloadPolicy]
    OVERLOAD_POLICY_REJECT: _ClassVar[OverloadPolicy]

class ItemSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_SOURCE_UNSPECIFIED: _ClassVar[ItemSource]
    ITEM_SOURCE_MODEL: _ClassVar[ItemSource]
    ITEM_SOURCE_FALLBACK: _ClassVar[ItemSource]

class FeedbackType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_TYPE_UNSPECIFIED: _ClassVar[FeedbackType]
    FEEDBACK_TYPE_IMPRESSION: _ClassVar[FeedbackType]
    FEEDBACK_TYPE_CLICK: _ClassVar[FeedbackType]
    FEEDBACK_TYPE_ADD_TO_CART: _ClassVar[FeedbackType]
    FEEDBACK_TYPE_PURCHASE: _ClassVar[FeedbackType]
    FEEDBACK_TYPE_DISMISS: _ClassVar[FeedbackType]
STRATEGY_UNSPECIFIED: Strategy
STRATEGY_AUTO: Strategy
STRATEGY_MODEL: Strategy
STRATEGY_POINTWISE: Strategy
STRATEGY_PARTIAL: Strategy
STRATEGY_FALLBACK: Strategy
FALLBACK_REASON_UNSPECIFIED: FallbackReason
FALLBACK_REASON_ENGINE_NOT_READY: FallbackReason
FALLBACK_REASON_ENGINE_ERROR: FallbackReason
FALLBACK_REASON_ENGINE_DEAD: FallbackReason
FALLBACK_REASON_OVERLOAD: FallbackReason
FALLBACK_REASON_DEADLINE: FallbackReason
FALLBACK_REASON_CONTEXT_TOO_LONG: FallbackReason
FALLBACK_REASON_CIRCUIT_OPEN: FallbackReason
FALLBACK_REASON_UNKNOWN_CANDIDATES: FallbackReason
OVERLOAD_POLICY_UNSPECIFIED: OverloadPolicy
OVERLOAD_POLICY_FALLBACK: OverloadPolicy
OVERLOAD_POLICY_REJECT: OverloadPolicy
ITEM_SOURCE_UNSPECIFIED: ItemSource
ITEM_SOURCE_MODEL: ItemSource
ITEM_SOURCE_FALLBACK: ItemSource
FEEDBACK_TYPE_UNSPECIFIED: FeedbackType
FEEDBACK_TYPE_IMPRESSION: FeedbackType
FEEDBACK_TYPE_CLICK: FeedbackType
FEEDBACK_TYPE_ADD_TO_CART: FeedbackType
FEEDBACK_TYPE_PURCHASE: FeedbackType
FEEDBACK_TYPE_DISMISS: FeedbackType

class Context(_message.Message):
    __slots__ = ("query", "user_id", "history_item_ids", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUERY_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    query: str
    user_id: str
    history_item_ids: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, query: _Optional[str] = ..., user_id: _Optional[str] = ..., history_item_ids: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("id", "title", "category", "attributes", "score")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    category: str
    attributes: _containers.ScalarMap[str, str]
    score: float
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., category: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., score: _Optional[float] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("item_id", "item", "score")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    item: Item
    score: float
    def __init__(self, item_id: _Optional[str] = ..., item: _Optional[_Union[Item, _Mapping]] = ..., score: _Optional[float] = ...) -> None: ...

class Constraints(_message.Message):
    __slots__ = ("max_per_category", "category_limits", "exclude_ids")
    class CategoryLimitsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MAX_PER_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_LIMITS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_IDS_FIELD_NUMBER: _ClassVar[int]
    max_per_category: int
    category_limits: _containers.ScalarMap[str, int]
    exclude_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, max_per_category: _Optional[int] = ..., category_limits: _Optional[_Mapping[str, int]] = ..., exclude_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("request_id", "context", "candidates", "k", "constraints", "diversity", "strategy", "temperature", "seed", "relevance_prior", "overload_policy", "slate_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RELEVANCE_PRIOR_FIELD_NUMBER: _ClassVar[int]
    OVERLOAD_POLICY_FIELD_NUMBER: _ClassVar[int]
    SLATE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    context: Context
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    k: int
    constraints: Constraints
    diversity: float
    strategy: Strategy
    temperature: float
    seed: int
    relevance_prior: float
    overload_policy: OverloadPolicy
    slate_id: str
    def __init__(self, request_id: _Optional[str] = ..., context: _Optional[_Union[Context, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., k: _Optional[int] = ..., constraints: _Optional[_Union[Constraints, _Mapping]] = ..., diversity: _Optional[float] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., temperature: _Optional[float] = ..., seed: _Optional[int] = ..., relevance_prior: _Optional[float] = ..., overload_policy: _Optional[_Union[OverloadPolicy, str]] = ..., slate_id: _Optional[str] = ...) -> None: ...

class SlateItem(_message.Message):
    __slots__ = ("item_id", "position", "source", "score", "category", "title")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    position: int
    source: ItemSource
    score: float
    category: str
    title: str
    def __init__(self, item_id: _Optional[str] = ..., position: _Optional[int] = ..., source: _Optional[_Union[ItemSource, str]] = ..., score: _Optional[float] = ..., category: _Optional[str] = ..., title: _Optional[str] = ...) -> None: ...

class DiversityMetrics(_message.Message):
    __slots__ = ("intra_list_diversity", "category_coverage", "redundancy")
    INTRA_LIST_DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    REDUNDANCY_FIELD_NUMBER: _ClassVar[int]
    intra_list_diversity: float
    category_coverage: float
    redundancy: float
    def __init__(self, intra_list_diversity: _Optional[float] = ..., category_coverage: _Optional[float] = ..., redundancy: _Optional[float] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("time_to_first_item_seconds", "total_seconds")
    TIME_TO_FIRST_ITEM_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    time_to_first_item_seconds: float
    total_seconds: float
    def __init__(self, time_to_first_item_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ...) -> None: ...

class Slate(_message.Message):
    __slots__ = ("request_id", "items", "strategy", "fallback_reason", "diversity", "timings", "model_id", "catalogue_version", "generated_tokens", "slate_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CATALOGUE_VERSION_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SLATE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    items: _containers.RepeatedCompositeFieldContainer[SlateItem]
    strategy: Strategy
    fallback_reason: FallbackReason
    diversity: DiversityMetrics
    timings: Timings
    model_id: str
    catalogue_version: int
    generated_tokens: int
    slate_id: str
    def __init__(self, request_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[SlateItem, _Mapping]]] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., fallback_reason: _Optional[_Union[FallbackReason, str]] = ..., diversity: _Optional[_Union[DiversityMetrics, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., model_id: _Optional[str] = ..., catalogue_version: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., slate_id: _Optional[str] = ...) -> None: ...

class SlateEvent(_message.Message):
    __slots__ = ("item", "slate")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    SLATE_FIELD_NUMBER: _ClassVar[int]
    item: SlateItem
    slate: Slate
    def __init__(self, item: _Optional[_Union[SlateItem, _Mapping]] = ..., slate: _Optional[_Union[Slate, _Mapping]] = ...) -> None: ...

class CatalogueItem(_message.Message):
    __slots__ = ("id", "title", "category", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    category: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., category: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class UpsertItemsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[CatalogueItem]
    def __init__(self, items: _Optional[_Iterable[_Union[CatalogueItem, _Mapping]]] = ...) -> None: ...

class DeleteItemsRequest(_message.Message):
    __slots__ = ("item_ids",)
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetCatalogueInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CatalogueInfo(_message.Message):
    __slots__ = ("size", "version", "categories")
    class CategoriesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SIZE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    size: int
    version: int
    categories: _containers.ScalarMap[str, int]
    def __init__(self, size: _Optional[int] = ..., version: _Optional[int] = ..., categories: _Optional[_Mapping[str, int]] = ...) -> None: ...

class FeedbackEvent(_message.Message):
    __slots__ = ("event_id", "slate_id", "type", "item_ids", "positions", "timestamp", "user_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SLATE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    slate_id: str
    type: FeedbackType
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    positions: _containers.RepeatedScalarFieldContainer[int]
    timestamp: float
    user_id: str
    def __init__(self, event_id: _Optional[str] = ..., slate_id: _Optional[str] = ..., type: _Optional[_Union[FeedbackType, str]] = ..., item_ids: _Optional[_Iterable[str]] = ..., positions: _Optional[_Iterable[int]] = ..., timestamp: _Optional[float] = ..., user_id: _Optional[str] = ...) -> None: ...

class ReportEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[FeedbackEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[FeedbackEvent, _Mapping]]] = ...) -> None: ...

class ReportEventsResponse(_message.Message):
    __slots__ = ("accepted", "duplicates")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("path", "shadow_requests")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHADOW_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    path: str
    shadow_requests: int
    def __init__(self, path: _Optional[str] = ..., shadow_requests: _Optional[int] = ...) -> None: ...

class ShadowComparison(_message.Message):
    __slots__ = ("requests", "mean_overlap", "mean_intra_list_diversity_delta", "mean_category_coverage_delta")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MEAN_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    MEAN_INTRA_LIST_DIVERSITY_DELTA_FIELD_NUMBER: _ClassVar[int]
    MEAN_CATEGORY_COVERAGE_DELTA_FIELD_NUMBER: _ClassVar[int]
    requests: int
    mean_overlap: float
    mean_intra_list_diversity_delta: float
    mean_category_coverage_delta: float
    def __init__(self, requests: _Optional[int] = ..., mean_overlap: _Optional[float] = ..., mean_intra_list_diversity_delta: _Optional[float] = ..., mean_category_coverage_delta: _Optional[float] = ...) -> None: ...

class RollbackModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("model_id", "path", "previous_model_id", "previous_path", "last_load_seconds", "switches", "shadow")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PATH_FIELD_NUMBER: _ClassVar[int]
    LAST_LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SWITCHES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    path: str
    previous_model_id: str
    previous_path: str
    last_load_seconds: float
    switches: int
    shadow: ShadowComparison
    def __init__(self, model_id: _Optional[str] = ..., path: _Optional[str] = ..., previous_model_id: _Optional[str] = ..., previous_path: _Optional[str] = ..., last_load_seconds: _Optional[float] = ..., switches: _Optional[int] = ..., shadow: _Optional[_Union[ShadowComparison, _Mapping]] = ...) -> None: ...
