/* A small JSON reader; see vjson.h. */
#include "vjson.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
  const char *p, *end;
  char *err;
  size_t err_size;
  int depth;
} parser;

static int bad(parser *ps, const char *what) {
  if (ps->err && ps->err_size)
    snprintf(ps->err, ps->err_size, "JSON: %s at byte %ld", what, (long)(ps->end - ps->p));
  return 1;
}

static void skip_ws(parser *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t'))
    ps->p++;
}

static int parse_value(parser *ps, vj *out);

static int parse_string(parser *ps, char **out) {
  if (ps->p >= ps->end || *ps->p != '"') return bad(ps, "expected a string");
  ps->p++;
  const char *start = ps->p;
  size_t n = 0;
  while (ps->p < ps->end && *ps->p != '"') {
    if (*ps->p == '\\') ps->p++;
    ps->p++;
    n++;
  }
  if (ps->p >= ps->end) return bad(ps, "unterminated string");
  char *s = malloc(n + 1), *w = s;
  if (!s) return bad(ps, "out of memory");
  for (const char *r = start; r < ps->p; r++) {
    if (*r == '\\') {
      r++;
      *w++ = *r == 'n' ? '\n' : *r == 't' ? '\t' : *r;
    } else {
      *w++ = *r;
    }
  }
  *w = '\0';
  ps->p++;
  *out = s;
  return 0;
}

/* Children are appended to a growing array. */
static vj *push(vj *parent) {
  vj *items = realloc(parent->items, (parent->count + 1) * sizeof *items);
  if (!items) return NULL;
  parent->items = items;
  memset(&items[parent->count], 0, sizeof *items);
  return &items[parent->count++];
}

static int parse_container(parser *ps, vj *out, char close) {
  out->type = close == '}' ? VJ_OBJECT : VJ_ARRAY;
  ps->p++;
  if (++ps->depth > 64) return bad(ps, "nesting too deep");
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == close) {
    ps->p++;
    ps->depth--;
    return 0;
  }
  for (;;) {
    vj *child = push(out);
    if (!child) return bad(ps, "out of memory");
    skip_ws(ps);
    if (close == '}') {
      if (parse_string(ps, &child->key)) return 1;
      skip_ws(ps);
      if (ps->p >= ps->end || *ps->p != ':') return bad(ps, "expected ':'");
      ps->p++;
    }
    if (parse_value(ps, child)) return 1;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
      ps->p++;
      continue;
    }
    if (ps->p < ps->end && *ps->p == close) {
      ps->p++;
      ps->depth--;
      return 0;
    }
    return bad(ps, "expected ',' or a closing bracket");
  }
}

static int literal(parser *ps, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return 0;
  ps->p += n;
  return 1;
}

static int parse_value(parser *ps, vj *out) {
  skip_ws(ps);
  if (ps->p >= ps->end) return bad(ps, "unexpected end");
  const char c = *ps->p;
  if (c == '{') return parse_container(ps, out, '}');
  if (c == '[') return parse_container(ps, out, ']');
  if (c == '"') {
    out->type = VJ_STRING;
    return parse_string(ps, &out->string);
  }
  if (literal(ps, "true") || literal(ps, "false")) {
    out->type = VJ_BOOL;
    out->number = ps->p[-1] == 'e' && ps->p[-2] == 'u';
    return 0;
  }
  if (literal(ps, "null")) {
    out->type = VJ_NULL;
    return 0;
  }
  char buf[64];
  size_t n = 0;
  while (ps->p < ps->end && n < sizeof buf - 1 && strchr("+-0123456789.eE", *ps->p))
    buf[n++] = *ps->p++;
  buf[n] = '\0';
  char *endp;
  out->type = VJ_NUMBER;
  out->number = strtod(buf, &endp);
  if (n == 0 || *endp != '\0') return bad(ps, "bad value");
  return 0;
}

static void free_children(vj *v) {
  for (size_t i = 0; i < v->count; i++) free_children(&v->items[i]);
  free(v->items);
  free(v->string);
  free(v->key);
}

void vj_free(vj *v) {
  if (!v) return;
  free_children(v);
  free(v);
}

vj *vj_parse(const char *text, size_t len, char *err, size_t err_size) {
  parser ps = {text, text + len, err, err_size, 0};
  vj *root = calloc(1, sizeof *root);
  if (!root) return NULL;
  if (parse_value(&ps, root)) {
    vj_free(root);
    return NULL;
  }
  skip_ws(&ps);
  if (ps.p != ps.end) {
    bad(&ps, "trailing characters");
    vj_free(root);
    return NULL;
  }
  return root;
}

const vj *vj_get(const vj *obj, const char *key) {
  if (!obj || obj->type != VJ_OBJECT) return NULL;
  for (size_t i = 0; i < obj->count; i++)
    if (strcmp(obj->items[i].key, key) == 0) return &obj->items[i];
  return NULL;
}

const char *vj_str(const vj *obj, const char *key) {
  const vj *v = vj_get(obj, key);
  return v && v->type == VJ_STRING ? v->string : NULL;
}
