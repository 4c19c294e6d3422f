/** The dashboard's two DOM helpers: an element by id, and a new element with attributes and children. */

export const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

export function el(
  tag: string,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}
