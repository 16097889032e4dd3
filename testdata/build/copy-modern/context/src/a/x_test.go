xt
