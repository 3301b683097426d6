/**
 * Text that comes from a file (model metadata, tensor names) made safe to print: a terminal must
 * not receive escape sequences, line breaks or bidirectional overrides that a model author put in
 * a `status` string or a metadata value.
 */

/** Longest text rendered in full by {@link quoteText}; longer text is cut. */
const MAX_QUOTED_CHARS = 200;

// C0 controls and DEL, C1 controls (U+009B is a one-character CSI), the line and paragraph
// separators, and the bidirectional marks, embeddings, overrides and isolates ("Trojan Source").
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

const NAMED: Readonly<Record<string, string>> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * Escapes the control characters of `text` so that printing it cannot move the cursor, change
 * colours, start a new line or reorder what follows: `\n`, `\r` and `\t` become those two
 * characters, any other character below U+0100 becomes `\xNN`, and the rest (U+2028, bidi
 * controls) `\uNNNN`. Everything else, backslashes included, is kept as it is, so ordinary text
 * reads unchanged.
 *
 * @param text - Any string, e.g. a model file's `status` metadata.
 * @returns The string with every control character escaped; `text` itself when it has none.
 */
export function escapeControl(text: string): string {
  return text.replace(CONTROL, (c) => {
    const named = NAMED[c];
    if (named !== undefined) return named;
    const code = c.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/**
 * Renders text from a file for an error message: in double quotes, control characters escaped
 * as by {@link escapeControl}, `"` and `\` backslash-escaped, and cut after 200 characters with
 * the full length noted.
 *
 * @param text - Any string.
 * @returns A single-line, quoted rendering.
 */
export function quoteText(text: string): string {
  const cut = text.length > MAX_QUOTED_CHARS;
  const shown = cut ? text.slice(0, MAX_QUOTED_CHARS) : text;
  // Backslashes and quotes first, so that the escapes added by escapeControl stay single.
  const quoted = `"${escapeControl(shown.replace(/[\\"]/g, '\\$&'))}"`;
  return cut ? `${quoted}... (${text.length} characters)` : quoted;
}
