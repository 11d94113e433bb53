// Resend a record's opening code for an applicant who lost the SMS and calls: a new code goes
// to the record's mobile and the old one stops working at once (POST
// /api/v1/staff/records/{number}/resend-code). Two clicks, because the first revokes a code.

import { post } from "../api.js";
import { h, notice, showToast } from "../dom.js";

const CONFIRM_MS = 5000;

// The handovers whose code the applicant holds: a drop-off reserved, a licence waiting.
export function codeIsOut(ho) {
  return (
    (ho.kind === "dropoff" && ho.state === "reserved") ||
    (ho.kind === "pickup" && (ho.state === "deposited" || ho.state === "overdue"))
  );
}

// ``record``: {application_number, handovers}; ``after``: called once a code went out (a
// page that follows the server refreshes). The outcome is shown beside the button and in the
// toast, which outlives a redraw of the row.
export function resendButton(record, after) {
  if (!record.handovers.some(codeIsOut)) return null;
  const number = record.application_number;
  const result = h("div", { class: "resend-result" });
  const label = "重发开箱码 Resend code";
  const button = h("button", { type: "button", class: "resend-code", "data-record": number }, label);
  let armed = null;
  const disarm = () => {
    clearTimeout(armed);
    armed = null;
    button.textContent = label;
    button.classList.remove("danger");
  };
  button.addEventListener("click", async () => {
    if (!armed) {
      button.textContent = "确认重发（原码将失效）Confirm: the old code stops working";
      button.classList.add("danger");
      armed = setTimeout(disarm, CONFIRM_MS);
      return;
    }
    disarm();
    button.disabled = true;
    try {
      const sent = await post(`/api/v1/staff/records/${encodeURIComponent(number)}/resend-code`);
      const said = `${sent.message_zh} ${sent.message_en}`;
      result.replaceChildren(notice("good", said, { "data-sent-to": sent.sent_to }));
      showToast(said, "good");
      if (after) after(sent);
    } catch (err) {
      const problem = err.problem || {};
      const text = problem.message_zh
        ? `${problem.message_zh} ${problem.message_en}`
        : `无法重发 Cannot resend: ${err.message}`;
      result.replaceChildren(notice("error", text, { "data-reason": problem.reason || err.status }));
      showToast(text, "bad");
    } finally {
      button.disabled = false;
    }
  });
  return h("div", { class: "resend" }, button, result);
}

// The same as an action of a record's own page: (detail, ctx) -> element or null, for a list
// of record actions such as RECORD_ACTIONS (detail = {record, handovers}).
export function resendAction(detail, ctx) {
  const record = { application_number: detail.record.application_number, handovers: detail.handovers };
  return resendButton(record, () => ctx && ctx.refresh && ctx.refresh());
}
