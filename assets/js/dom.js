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
