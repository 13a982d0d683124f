// Small DOM functions. Text always goes in through textContent, never as markup.

/** The element with this id (it must exist: the page and the code ship together). */
export function byId(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`missing element #${id}`);
  return element;
}

/**
 * Creates an element. `props.class` sets className, `props.text` the text, `props.attrs` attributes;
 * children are nodes or strings (strings become text nodes).
 */
export function el(tag, props = {}, children = []) {
  const element = document.createElement(tag);
  if (props.class) element.className = props.class;
  if (props.text !== undefined) element.textContent = props.text;
  if (props.attrs) {
    for (const [name, value] of Object.entries(props.attrs)) {
      if (value !== undefined && value !== null && value !== false) element.setAttribute(name, String(value));
    }
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    element.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return element;
}

export function show(element, visible = true) {
  element.hidden = !visible;
}

/** Shows `message` in an error slot, or hides the slot when the message is empty. */
export function setError(element, message) {
  element.textContent = message || '';
  element.hidden = !message;
}

/** Disables a form's controls while `work` runs, then restores them. */
export async function whileBusy(form, work) {
  const controls = [...form.querySelectorAll('button, input, textarea')].filter((c) => !c.disabled);
  form.setAttribute('aria-busy', 'true');
  for (const control of controls) {
    if (control.tagName === 'BUTTON') control.disabled = true;
    else control.readOnly = true;
  }
  try {
    return await work();
  } finally {
    form.removeAttribute('aria-busy');
    for (const control of controls) {
      if (control.tagName === 'BUTTON') control.disabled = false;
      else control.readOnly = false;
    }
  }
}

/** True when the layout shows the chat list and the chat side by side. */
export function isWide() {
  return window.matchMedia('(min-width: 721px)').matches;
}

// A web address in a message: http or https only, up to whitespace or a character that cannot be in one.
const LINK_PATTERN = /\bhttps?:\/\/[^\s<>"'`]+/gi;
// Punctuation that ends a sentence rather than the address.
const TRAILING = /[.,;:!?)\]}]+$/;

/**
 * The text of a message as nodes: http(s) addresses become links that open in a new tab without telling the
 * target where they came from; everything else (javascript:, data:, ...) stays text.
 */
export function linkified(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(LINK_PATTERN)) {
    const address = match[0].replace(TRAILING, '');
    let url;
    try {
      url = new URL(address);
    } catch {
      continue;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') continue;
    if (match.index > last) nodes.push(text.slice(last, match.index));
    nodes.push(el('a', {
      class: 'message-link',
      text: address,
      attrs: { href: url.href, target: '_blank', rel: 'noopener noreferrer' },
    }));
    last = match.index + address.length;
  }
  if (last < text.length) nodes.push(text.slice(last));
  return nodes;
}
