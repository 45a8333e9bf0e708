"""slatewise.v1.FeedbackService: ReportEvents."""

from __future__ import annotations

import grpc

from slatewise.errors import bad_request_status
from slatewise.feedback.store import FeedbackStore, IncomingEvent
from slatewise.proto import pb, pb_grpc

EVENT_TYPE = {
    pb.FEEDBACK_TYPE_IMPRESSION: "impression",
    pb.FEEDBACK_TYPE_CLICK: "click",
    pb.FEEDBACK_TYPE_ADD_TO_CART: "add_to_cart",
    pb.FEEDBACK_TYPE_PURCHASE: "purchase",
    pb.FEEDBACK_TYPE_DISMISS: "dismiss",
}


def incoming(event: pb.FeedbackEvent) -> IncomingEvent:
    return IncomingEvent(event_id=event.event_id, slate_id=event.slate_id, type=EVENT_TYPE.get(event.type, ""),
                         item_ids=list(event.item_ids), positions=list(event.positions),
                         timestamp=event.timestamp, user_id=event.user_id)


class FeedbackService(pb_grpc.FeedbackServiceServicer):
    def __init__(self, store: FeedbackStore | None) -> None:
        self.store = store

    async def ReportEvents(self, request, context):
        if self.store is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "feedback is off: start the server with --feedback-dir DIR")
        result = await self.store.report([incoming(e) for e in request.events])
        if result.violations:
            # The valid events of the batch are durable: say so, so that a
            # caller fixing the rest need not guess (re-sending them is harmless).
            await context.abort_with_status(bad_request_status(
                result.violations, prefix=f"{result.accepted} of {len(request.events)} events accepted, "
                                          f"{result.duplicates} duplicates; "))
        return pb.ReportEventsResponse(accepted=result.accepted, duplicates=result.duplicates)
